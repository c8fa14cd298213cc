package e2e

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"tandem/internal/server"
)

// untranslatedJS lists the words of the page that are not in its language: every text and every attribute a person
// reads or hears (aria-label, title, placeholder, alt, a meta description) of every element, shown or not yet,
// outside the parts marked as another language (a language's own name in the picker) or as not to be translated
// (the names of the camera and the microphone, which the system gives). Words in Latin letters are
// English unless they are names (of the people on the page, of tandem), units, keys or technical words.
func untranslatedJS(allowed ...string) string {
	words := append([]string{"tandem", "ms", "kb", "Mb", "https", "localhost", "JavaScript"}, allowed...)
	return fmt.Sprintf(`(() => {
		const allowed = new Set(%s.map((w) => w.toLowerCase()));
		const root = document.documentElement.lang;
		const out = [];
		const check = (what, text, node) => {
			const left = (text.match(/[A-Za-z]{2,}/g) || []).filter((w) => !allowed.has(w.toLowerCase()));
			if (left.length) out.push(what + ' of ' + (node.id ? '#' + node.id : node.tagName.toLowerCase() + (node.className && typeof node.className === 'string' ? '.' + node.className.split(' ')[0] : '')) + ': ' + text.trim().slice(0, 80));
		};
		// Not the page's words: what is marked as another language, or as not to be translated (device names).
		const ours = (node) => { const l = node.closest('[lang]'); return (!l || l.lang === root) && !node.closest('[translate="no"]'); };
		const walker = document.createTreeWalker(document.documentElement, NodeFilter.SHOW_TEXT);
		for (let n = walker.nextNode(); n; n = walker.nextNode()) {
			const el = n.parentElement;
			if (!el || el.closest('script, style, noscript, title') || !ours(el) || !n.textContent.trim()) continue;
			check('text', n.textContent, el);
		}
		for (const el of document.querySelectorAll('[aria-label], [title], [placeholder], [alt], meta[name="description"]')) {
			if (!ours(el)) continue;
			for (const a of ['aria-label', 'title', 'placeholder', 'alt', 'content']) {
				if (el.hasAttribute(a) && (a !== 'content' || el.tagName === 'META')) check(a, el.getAttribute(a), el);
			}
		}
		if (document.title) check('title', document.title, document.head);
		return out;
	})()`, jsonList(words))
}

func jsonList(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = jsString(w)
	}
	return "[" + strings.Join(q, ",") + "]"
}

// assertTranslated fails the test for every word of the page that is left in English while it speaks Chinese.
func (p *page) assertTranslated(t *testing.T, state string, names ...string) {
	t.Helper()
	if lang := value[string](p, `document.documentElement.lang`); lang != "zh-Hans" {
		t.Fatalf("%s: %s: the page speaks %q, want zh-Hans", p.label, state, lang)
	}
	for _, w := range value[[]string](p, untranslatedJS(names...)) {
		t.Errorf("%s: %s: not translated: %s", p.label, state, w)
	}
}

// chooseLanguage picks a language in the page's language picker, as a person would.
func (p *page) chooseLanguage(tag string) {
	p.t.Helper()
	p.must(fmt.Sprintf(`(() => {
		const s = [...document.querySelectorAll('.lang-select')].find((e) => e.offsetParent !== null);
		s.value = %s;
		s.dispatchEvent(new Event('change', { bubbles: true }));
	})()`, jsString(tag)))
	p.waitFor("the page in "+tag, fmt.Sprintf(`document.documentElement.lang === %s`, jsString(tag)))
}

// shoot saves screenshots of the page as it is, in both languages and both themes, and leaves it in Chinese.
func (p *page) shoot(state string) {
	p.t.Helper()
	for _, lang := range []string{"en", "zh-Hans"} {
		p.chooseLanguage(lang)
		for _, scheme := range []string{"light", "dark"} {
			p.setColorScheme(scheme)
			p.must(finishAnimationsJS)
			p.screenshot(fmt.Sprintf("lang-%s-%s-%s-%s", state, p.label, lang, scheme))
		}
	}
}

// TestLanguages (issue 14, item 5): the page speaks the browser's language when it has a file for it (Simplified
// Chinese for zh-CN, English for en-GB and for a language it lacks), every word of it (text, errors, states,
// tooltips, labels for screen readers) on every page: the login page with an error, the idle page, a ringing page,
// a call with its quality readout, chat, devices and notices, an audio call, the recent calls; times and durations
// are in the language's formats; the language can be switched, and the choice is remembered on the device; the two
// language files have the same keys and placeholders. Screenshots of each state, on a desktop and a phone, in both
// languages and both themes.
func TestLanguages(t *testing.T) {
	srv := startTandem(t, func(c *server.Config) { c.EchoName = "echo" })
	startEcho(t, srv, 0)
	zh := withLanguages("zh-CN,zh;q=0.9,en;q=0.8")

	// The two files say the same things.
	probe := openPage(t, "probe", srv.url+"/", withLanguages("fr-FR,fr"))
	probe.waitFor("the login page", `document.body.dataset.view === 'login'`)
	if lang := value[string](probe, `document.documentElement.lang`); lang != "en" {
		t.Errorf("a French browser gets the page in %q, want en (the fallback)", lang)
	}
	diff := value[[]string](probe, `(async () => {
		const en = (await import('/js/lang/en.js')).default, zh = (await import('/js/lang/zh-Hans.js')).default;
		const ph = (m) => JSON.stringify([...new Set((typeof m === 'string' ? m : Object.values(m).join(' ')).match(/\{\w+\}/g) || [])].sort());
		const out = [];
		for (const k of Object.keys(en)) if (!(k in zh)) out.push('zh-Hans lacks ' + k); else if (ph(en[k]) !== ph(zh[k])) out.push(k + ': placeholders ' + ph(en[k]) + ' and ' + ph(zh[k]));
		for (const k of Object.keys(zh)) if (!(k in en)) out.push('en lacks ' + k);
		return out;
	})()`)
	for _, d := range diff {
		t.Error(d)
	}
	type matched struct{ ZhTW, EnGB, ZhSG, De string }
	m := value[matched](probe, `import('/js/i18n.js').then((i) => ({
		ZhTW: i.match('zh-TW', ['en', 'zh-Hans']), EnGB: i.match('en-GB', ['en', 'zh-Hans']),
		ZhSG: i.match('zh-SG', ['en', 'zh-Hans']), De: i.match('de', ['en', 'zh-Hans']) }))`)
	if m != (matched{ZhTW: "zh-Hans", EnGB: "en", ZhSG: "zh-Hans", De: ""}) {
		t.Errorf("languages matched: %+v", m)
	}
	if got := value[[]string](probe, `fetch('/js/lang/index.json').then((r) => r.json())`); strings.Join(got, ",") != "en,zh-Hans" {
		t.Errorf("the server lists the languages %q, want en and zh-Hans", got)
	}

	// A Chinese browser: the login page in Chinese, with an error.
	alice := openPage(t, "alice", srv.url+"/", zh)
	alice.waitFor("the login page in Chinese", `document.body.dataset.view === 'login' && document.documentElement.lang === 'zh-Hans'`)
	alice.assertTranslated(t, "login")
	alice.shoot("login")
	phone := openPage(t, "phone", srv.url+"/", zh, withViewport(390, 844))
	phone.waitFor("the login page in Chinese", `document.body.dataset.view === 'login' && document.documentElement.lang === 'zh-Hans'`)
	phone.assertTranslated(t, "login-phone")
	phone.shoot("login")
	bob := openTandem(t, srv, "bob", "", zh, withViewport(390, 844))
	alice.signInAs("bob")
	alice.waitFor("the name-taken error", `document.querySelector('#login-error').textContent.includes('已经有人叫“bob”')`)
	alice.assertTranslated(t, "login-error", "bob")
	alice.signIn("alice")

	// Idle, with people and the echo line, and a notice.
	alice.search("")
	alice.waitFor("bob and the echo line", `document.querySelector('.person[data-name="bob"]') && !document.querySelector('#test-call').hidden`)
	alice.dial("nobody")
	alice.waitNotice("nobody不在线")
	alice.assertTranslated(t, "idle", "alice", "bob", "echo", "nobody")
	alice.shoot("idle")
	alice.assertAccessible(t, "zh-idle")
	bob.search("")
	bob.waitFor("alice in bob's list", `document.querySelector('.person[data-name="alice"]')`)
	bob.assertTranslated(t, "idle-phone", "alice", "bob", "echo")
	bob.shoot("idle")

	// Ringing.
	bob.callFromList("alice")
	alice.waitIncoming("bob")
	alice.waitFor("the ringing words", `document.querySelector('#incoming-detail').textContent === '正在呼叫你' && document.title === '☎ bob来电…'`)
	alice.assertTranslated(t, "ringing", "alice", "bob", "echo", "nobody")
	alice.shoot("ringing")
	bob.assertTranslated(t, "calling-phone", "alice", "bob", "echo")
	bob.shoot("calling")

	// A call: quality readout, chat, devices, notices.
	alice.click("#accept-button")
	alice.assertMedia(tandemMedia)
	bob.assertMedia(tandemMedia)
	alice.click("#stats-button")
	alice.waitFor("the readout in Chinese units", `/毫秒$/.test(document.querySelector('#stat-rtt').textContent) && /秒$/.test(document.querySelector('#stat-in').textContent)`)
	bob.waitFor("chat ready", `tandem.chatReady`)
	bob.must(`document.querySelector('#chat-input').value = '你好！'; document.querySelector('#chat-form').requestSubmit()`)
	alice.waitFor("the unread badge", `!document.querySelector('#chat-unread').hidden`)
	alice.click("#chat-button")
	alice.must(`document.querySelector('#chat-input').value = '听得见'; document.querySelector('#chat-form').requestSubmit()`)
	alice.click("#mic-button")
	alice.waitNotice("麦克风已静音")
	alice.assertTranslated(t, "call", "alice", "bob", "echo", "nobody")
	alice.shoot("call")
	alice.assertAccessible(t, "zh-call")
	alice.click("#devices-button")
	alice.assertTranslated(t, "call-devices", "alice", "bob", "echo", "nobody")
	alice.shoot("call-devices")
	alice.click("#devices-button")
	bob.waitFor("alice shown as muted", `document.querySelector('#remote-flags').textContent === 'alice已静音'`)
	bob.assertTranslated(t, "call-phone", "alice", "bob", "echo")
	bob.shoot("call")
	alice.click("#mic-button")
	alice.waitFor("a second or more of the call", `/^\d+:\d\d$/.test(document.querySelector('#call-duration').textContent) && document.querySelector('#call-duration').textContent !== '0:00'`)
	alice.click("#hangup-button")
	alice.waitPhase("idle")
	bob.waitPhase("idle")
	if value[bool](bob, `!document.querySelector('#chat-unread').hidden`) {
		t.Error("bob's Chat button still counts the unread message of the call that ended")
	}
	// The call's length, in words of the language (Intl): "时长 5秒".
	alice.waitNotice("通话已结束，时长")
	if n := alice.notices(); !strings.Contains(n, "秒") {
		t.Errorf("alice's notice of the call's end gives no duration in Chinese: %q", n)
	}

	// An audio call, on the phone.
	bob.search("alice")
	bob.click(`.person-audio[data-name="alice"]`)
	alice.waitIncoming("bob")
	alice.assertTranslated(t, "ringing-audio", "alice", "bob", "echo", "nobody")
	alice.click("#accept-button")
	bob.waitFor("the audio call", `tandem.phase === 'active' && document.querySelector('#stage-detail').textContent === '语音通话：双方都没有视频。'`)
	bob.assertTranslated(t, "audio-call-phone", "alice", "bob", "echo")
	bob.shoot("audio-call")
	bob.click("#hangup-button")
	alice.waitPhase("idle")

	// A call ringing on the phone.
	alice.callFromList("bob")
	bob.waitIncoming("alice")
	bob.assertTranslated(t, "ringing-phone", "alice", "bob", "echo")
	bob.shoot("ringing")
	bob.click("#decline-button")
	alice.waitPhase("idle")

	// The recent calls, with a missed one, with times and durations in Chinese.
	bob.callFromList("alice")
	alice.waitIncoming("bob")
	bob.click("#hangup-button")
	alice.waitPhase("idle")
	alice.showRecent()
	alice.waitFor("the recent calls in Chinese", `document.querySelector('#recent-list .recent-missed') && document.querySelector('#recent-list').textContent.includes('未接来电')`)
	recent := value[string](alice, `document.querySelector('#recent-list').textContent`)
	if !strings.Contains(recent, "秒") || !regexp.MustCompile(`· \d{1,2}:\d\d：`).MatchString(recent) {
		t.Errorf("alice's recent calls give no duration in Chinese, or no time of day (24-hour): %q", recent)
	}
	alice.assertTranslated(t, "recent", "alice", "bob", "echo", "nobody")
	alice.shoot("recent")
	bob.showRecent()
	bob.shoot("recent")

	// Switching: English, remembered across a reload; then Chinese again. A notice on screen switches with the page.
	alice.dial("nobody")
	alice.waitNotice("nobody不在线")
	alice.chooseLanguage("en")
	alice.waitNotice("nobody is not online.")
	if n := alice.notices(); strings.Contains(n, "不在线") {
		t.Errorf("a notice stayed in Chinese after the switch to English: %q", n)
	}
	if label := value[string](alice, `document.querySelector('#toasts .toast-close').getAttribute('aria-label')`); label != "Dismiss" {
		t.Errorf("a notice's close button is labelled %q after the switch to English", label)
	}
	alice.waitFor("the page in English", `document.querySelector('#tab-recent span').textContent === 'Recent' && document.querySelector('#stage-title').textContent === 'Ready when you are'`)
	// The same calls, in English's formats: "sec", and a 12-hour clock.
	recent = value[string](alice, `document.querySelector('#recent-list').textContent`)
	if !strings.Contains(recent, "Missed call") || !strings.Contains(recent, "sec") || !regexp.MustCompile(`\d:\d\d\s?[AP]M`).MatchString(recent) {
		t.Errorf("alice's recent calls in English: %q", recent)
	}
	alice.reload()
	alice.waitFor("alice signed back in, in English", `document.body.dataset.view === 'call' && tandem.signaling === 'online' && document.documentElement.lang === 'en' && document.querySelector('#stage-title').textContent === 'Ready when you are'`)
	alice.chooseLanguage("zh-Hans")
	alice.waitFor("the page in Chinese", `document.querySelector('#stage-title').textContent === '随时可以开始'`)
}
