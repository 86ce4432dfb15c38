// The static copy (`notbetrieb export` of the demo, served by nginx as the README configures it;
// scripts/test starts both and sets NOTBETRIEB_EXPORT_URL): one page of every kind, JavaScript
// disabled, has the copy banner with its time, no form (nothing in the copy can reach a server),
// the search's fallback where the live site has the search form, and zero axe violations at
// 1280 px and 320 px. Screenshots land in screenshots/copy-*.png.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { AxeBuilder } from '@axe-core/playwright';
import { SCREENSHOT_DIR, launch, newPage, messages, formatViolations } from './lib.mjs';

const EXPORT_URL = (process.env.NOTBETRIEB_EXPORT_URL || '').replace(/\/+$/, '');
const skip = EXPORT_URL ? false : 'NOTBETRIEB_EXPORT_URL is not set (scripts/test serves the export with nginx)';

const PAGES = [
  { name: 'home', path: '/', fallback: true },
  { name: 'search', path: '/suche', fallback: true },
  { name: 'towns', path: '/kommunen' },
  { name: 'town', path: '/kommunen/menden-sauerland', fallback: true },
  { name: 'town-service', path: '/kommunen/menden-sauerland/leistungen/fahrzeug-zulassen' },
  { name: 'services', path: '/leistungen' },
  { name: 'service', path: '/leistungen/fahrzeug-zulassen' },
  { name: 'announcements', path: '/meldungen' },
  { name: 'announcement', path: '/meldungen/basisbetrieb-startet' },
  { name: 'faq', path: '/fragen' },
  { name: 'sources', path: '/quellen' },
  { name: 'district', path: '/kreise/maerkischer-kreis' },
  { name: 'timetable', path: '/fahrplan' },
  { name: 'town-timetable', path: '/kommunen/menden-sauerland/fahrplan' },
  { name: 'english-town', path: '/en/kommunen/menden-sauerland', lang: 'en', fallback: true },
  { name: 'english-home', path: '/en/', lang: 'en', fallback: true },
  { name: 'not-found', path: '/kommunen/gibt-es-nicht', status: 404 },
];

/** The catalogue text before its first placeholder: what every copy banner starts with. */
function bannerStart(lang) {
  return messages(lang).site.copy_banner.split('{')[0].trim();
}

let browser;
before(async () => {
  if (!skip) browser = await launch();
});
after(async () => {
  await browser?.close();
});

async function open(spec, width, options = {}) {
  const { context, page } = await newPage(browser, width, 900, options);
  const response = await page.goto(EXPORT_URL + spec.path, { waitUntil: 'load' });
  assert.ok(response, `no response for ${spec.path}`);
  assert.equal(response.status(), spec.status ?? 200, `HTTP status of ${spec.path} in the copy`);
  return { context, page };
}

for (const spec of PAGES) {
  describe(`copy: ${spec.name} ${spec.path}`, { skip }, () => {
    test('is marked as a copy, with its time, and has no form', { timeout: 60_000 }, async () => {
      const { context, page } = await open(spec, 1280);
      try {
        const lang = spec.lang ?? 'de';
        assert.equal(await page.locator('html').getAttribute('lang'), lang);
        assert.equal(await page.locator('h1').count(), 1, 'exactly one h1');
        const banner = page.locator('.copy-banner');
        assert.equal(await banner.count(), 1, 'the copy banner');
        const text = await banner.innerText();
        assert.ok(text.includes(bannerStart(lang)), `banner text: ${text}`);
        assert.match(text, /\d{2}:\d{2}/, 'the banner gives the time of the copy');
        assert.equal(await page.locator('form').count(), 0, 'no form in the copy');
        if (spec.fallback) {
          const main = await page.locator('main').innerText();
          assert.ok(main.includes(messages(lang).search.copy_unavailable), 'the copy says that search is not here');
          assert.ok((await page.locator(`main a[href$="/leistungen"]`).count()) > 0, 'link to the list of services');
          assert.ok((await page.locator(`main a[href$="/kommunen"]`).count()) > 0, 'link to the list of towns');
        }
        await page.screenshot({ path: join(SCREENSHOT_DIR, `copy-${spec.name}-1280.png`), fullPage: true });
      } finally {
        await context.close();
      }
    });

    test('has no axe violations', { timeout: 90_000 }, async () => {
      const report = [];
      for (const width of [1280, 320]) {
        const { context, page } = await open(spec, width, { javaScript: true });
        try {
          const results = await new AxeBuilder({ page }).analyze();
          assert.ok(results.passes.length > 0, 'axe ran no rule');
          if (results.violations.length > 0) {
            report.push(`${results.violations.length} axe violation(s) at ${width} px:\n${formatViolations(results.violations)}`);
          }
          if (width === 320) await page.screenshot({ path: join(SCREENSHOT_DIR, `copy-${spec.name}-320.png`), fullPage: true });
        } finally {
          await context.close();
        }
      }
      if (report.length > 0) {
        const text = `${spec.path} (copy)\n${report.join('\n')}`;
        console.error(text);
        assert.fail(text);
      }
    });
  });
}
