// Shared helpers for the browser tests: Debian's Chromium through playwright-core, JavaScript
// disabled (the public site must work without it), the base URL from scripts/test.
import { chromium } from 'playwright-core';
import { mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

export const BASE_URL = (process.env.NOTBETRIEB_BASE_URL || '').replace(/\/+$/, '');
if (!BASE_URL) {
  throw new Error(
    'NOTBETRIEB_BASE_URL is not set. Run scripts/test, or start `notbetrieb serve --demo` and set ' +
      'NOTBETRIEB_BASE_URL=http://127.0.0.1:PORT before `npm test` in tests/browser.',
  );
}

export const SCREENSHOT_DIR = join(here, 'screenshots');
mkdirSync(SCREENSHOT_DIR, { recursive: true });

export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

// `npx playwright install` cannot download browsers here: always Debian's chromium, and without
// the background-networking flags it keeps trying to reach hosts that this network refuses.
export async function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/**
 * A fresh context (own cookies, own focus state), JavaScript disabled unless `javaScript` is set:
 * only axe needs it, because timers and promises inside the page never fire while scripting is
 * off, and axe's run waits on them.
 */
export async function newPage(browser, width = 1280, height = 900, { javaScript = false } = {}) {
  const context = await browser.newContext({
    javaScriptEnabled: javaScript,
    viewport: { width, height },
    locale: 'de-DE',
  });
  const page = await context.newPage();
  return { context, page };
}

/** The message catalogue of `lang` (messages/LANG.toml) as { section: { key: text } }. */
export function messages(lang) {
  const text = readFileSync(join(here, '..', '..', 'messages', `${lang}.toml`), 'utf8');
  const sections = {};
  let section = '';
  for (const line of text.split('\n')) {
    const head = line.match(/^\s*\[([^\]]+)\]\s*$/);
    if (head) {
      section = head[1];
      continue;
    }
    const kv = line.match(/^\s*([A-Za-z0-9_]+)\s*=\s*"((?:[^"\\]|\\.)*)"/);
    if (kv) (sections[section] ||= {})[kv[1]] = kv[2].replace(/\\(["\\])/g, '$1');
  }
  return sections;
}

/** The words the UI uses for each availability level, read from the message catalogues. */
export function levelWords(lang) {
  const sections = messages(lang);
  const words = {};
  for (const level of ['normal', 'limited', 'emergency', 'unavailable']) {
    const candidates = [];
    if (sections.level?.[level]) candidates.push(sections.level[level]);
    // "{n} im Regelbetrieb" → "im Regelbetrieb"
    if (sections.counts?.[level]) candidates.push(sections.counts[level].replace(/\{[a-z_]+\}/g, '').trim());
    words[level] = candidates.filter(Boolean);
  }
  return words;
}

/** Formats axe violations so that a failing run says what, where and how to fix. */
export function formatViolations(violations) {
  return violations
    .map((v) => {
      const nodes = v.nodes
        .slice(0, 8)
        .map((n) => `      at ${n.target.join(' ')}\n        ${n.html.slice(0, 200)}\n        ${(n.failureSummary || '').replace(/\n/g, '\n        ')}`)
        .join('\n');
      const more = v.nodes.length > 8 ? `\n      … and ${v.nodes.length - 8} more` : '';
      return `  [${v.impact}] ${v.id}: ${v.help}\n    ${v.helpUrl}\n${nodes}${more}`;
    })
    .join('\n');
}
