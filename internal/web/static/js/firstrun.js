// The first-run page (first-run.html): fills in the certificate's fingerprint and the https address from
// /first-run.json, shows the address's QR code (/first-run-qr.svg), and speaks the person's language as the web
// client does (i18n.js, js/lang).

import { languageName, languages, onLanguageChange, setLanguage, startLanguage, t, language } from './i18n.js';

const $ = (id) => document.getElementById(id);

let info = null;

function render() {
  document.title = t('firstRun.pageTitle');
  if (!info) return;
  $('fingerprint').textContent = info.fingerprint || '';
  const open = $('open');
  if (info.url) {
    // Keep what the person asked for (an invite link's query, say) on the https address.
    const target = new URL(location.pathname + location.search + location.hash, info.url);
    open.href = target.href;
    $('open-url').textContent = target.host;
    open.hidden = false;
    $('no-url').hidden = true;
  } else {
    open.hidden = true;
    $('no-url').hidden = false;
  }
  const qr = $('qr');
  if (info.qr) {
    qr.alt = t('firstRun.qrAlt', { url: info.qr });
    if (!qr.getAttribute('src')) qr.src = '/first-run-qr.svg';
    qr.hidden = false;
  }
  $('phone').hidden = !info.qr;
}

function languagePicker() {
  const select = $('lang');
  select.replaceChildren(...languages().map((code) => {
    const o = document.createElement('option');
    o.value = code;
    o.lang = code; // a language's name is in that language
    o.textContent = languageName(code);
    return o;
  }));
  select.value = language();
  select.closest('.lang').hidden = languages().length < 2;
  select.addEventListener('change', () => setLanguage(select.value));
}

async function main() {
  onLanguageChange(() => {
    $('lang').value = language();
    render();
  });
  const loading = fetch('/first-run.json', { cache: 'no-store' }).then((r) => (r.ok ? r.json() : null)).catch(() => null);
  await startLanguage();
  languagePicker();
  info = await loading;
  render();
  document.body.dataset.ready = 'true';
}

main();
