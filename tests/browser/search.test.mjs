// The home page search works without JavaScript: fill both fields, press Enter, land on results.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { BASE_URL, SCREENSHOT_DIR, launch, newPage } from './lib.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test('home page search form submits without JavaScript', { timeout: 60_000 }, async () => {
  const { context, page } = await newPage(browser, 320);
  try {
    await page.goto(BASE_URL + '/');
    await page.getByLabel('Was möchten Sie erledigen?').fill('Auto anmelden');
    await page.getByLabel('Wo wohnen Sie?').fill('58706');
    await Promise.all([page.waitForURL(/\/suche\?/), page.getByLabel('Wo wohnen Sie?').press('Enter')]);
    const url = new URL(page.url());
    assert.equal(url.pathname, '/suche');
    assert.equal(url.searchParams.get('q'), 'Auto anmelden');
    assert.equal(url.searchParams.get('ort'), '58706');
    const heading = await page.locator('#treffer').innerText();
    assert.match(heading, /Menden/, `results heading names the town: ${heading}`);
    const first = page.locator('.results > li').first();
    assert.match(await first.locator('h3').innerText(), /Fahrzeug/);
    assert.ok((await first.locator('.level-word').count()) > 0, 'the result shows its status word');
    await page.screenshot({ path: join(SCREENSHOT_DIR, 'search-submitted-320.png'), fullPage: true });
  } finally {
    await context.close();
  }
});

test('an ambiguous place asks which town, and the choice leads to its results', { timeout: 60_000 }, async () => {
  const { context, page } = await newPage(browser, 1280);
  try {
    await page.goto(BASE_URL + '/');
    await page.getByLabel('Was möchten Sie erledigen?').fill('Geburtsurkunde');
    await page.getByLabel('Wo wohnen Sie?').fill('Bad');
    await Promise.all([page.waitForURL(/\/suche\?/), page.getByLabel('Was möchten Sie erledigen?').press('Enter')]);
    const choices = page.locator('.choices a');
    assert.ok((await choices.count()) > 1, 'several towns offered');
    const name = (await choices.first().innerText()).trim();
    await Promise.all([page.waitForURL(/ort=/), choices.first().click()]);
    assert.match(await page.locator('#treffer').innerText(), new RegExp(name));
  } finally {
    await context.close();
  }
});
