/* dni snippet: shows each visitor the tracking numbers leased to their visit.
 * Embed: <script async src="https://dni.example.cn/dni.js" data-site="shop"></script>
 * Optional: data-api (API origin, default: this script's), data-consent="required" (wait for
 * DNI.consent()). Mark elements with data-dni-noswap to leave them alone, with data-dni-swap to
 * also swap their alt/title/aria-label/href/content attributes.
 * It never throws into the page: on any failure the shop's own numbers stay or come back.
 *
 * Sections, in order: configuration · state · how shops print numbers (the patterns) ·
 * matching and rewriting text (no DOM: unit-tested in Node, static/snippet/test/) · swapping
 * the page · watching it · the visitor id · the API · start-up · window.DNI. */
/* global DNI_TEST */
(function (w, d) {
  if (w.DNI) return;  // loaded twice: the first copy does the work

  // The page comes first: anything we run from its events or timers never throws.
  function guarded(fn) {
    return function () {
      try { return fn.apply(this, arguments); } catch (e) { /* leave the page as it is */ }
    };
  }

  // ---- Configuration: only the data- attributes of our own <script> tag.

  const script = d.currentScript || {};
  const config = script.dataset || {};
  const apiOrigin = (config.api || new URL(script.src || location.href).origin).replace(/\/$/, '');
  // Kept on this browser: '_dni' the visit and its numbers, for the next page (localStorage);
  // '_dni_v' the visitor id and '_dni_optout' (cookie and localStorage).
  const FOR_A_YEAR = '; path=/; max-age=31536000; SameSite=Lax';

  // ---- State.

  let started = false;  // begun: not waiting for consent, not opted out
  let visit;  // the visit's id, once the API has answered
  let numbers = [];  // leased to the visit: [{target, number, extension}], as the API gave them
  let matchers = [];  // one per number (matcherFor)
  let observer;  // the MutationObserver, once there are numbers
  let reportedUrl = '';  // the URL the API last heard of
  let heartbeatTimer = 0;
  let storage;
  const originals = new Map();  // node -> its text, or {attribute: value}, before we touched it
  const swapListeners = [];  // DNI.onSwap
  try { storage = w.localStorage; } catch (e) { /* storage refused: cookies only */ }

  // ---- How shops print numbers. Patterns run on text made ASCII (toAscii), whose positions
  // are those of the original.

  // Between two digits, up to two SEPARATORS: space, hyphen, dot, middle dot, the dashes
  // U+2010-U+2015 and brackets ("400-888-1234", "(010) 5129", "+44 (0)20").
  const SEPARATOR = '[\\s\\-.·\u2010-\u2015()]';
  const SEPARATORS = SEPARATOR + '{0,2}';
  // Right after a number, the shop's own extension: kept as written.
  const EXTENSION = new RegExp(
    '^(\\s*(转|分机|ext\\.?|x)\\s*' +  // "转 8015", "分机 8015", "ext. 22", "x22"
    '|-' +  // "-8015"
    '|,+|;ext=' +  // in a tel: link: ",,8015", ";ext=8015"
    ')\\d{1,6}(?!\\w)', 'i');
  // Otherwise a number ends at one of these, or it is part of something longer.
  const NUMBER_END = new RegExp(
    '^([\\s(]*\\d\\d?:' +  // service hours: "(9:00-18:00)", " 8:00-18:00"
    '|\\s+\\+?\\d(\\d|' + SEPARATOR + '{1,2}(?=\\d)){6}' +  // another number after a space
    '|(?!' + SEPARATORS + '\\d|[a-z]))', 'i');  // anything but more digits or letters
  // Just before a number, any of these makes it part of something else. A digit followed by a
  // space may end another number ("010-62011365 400-680-8666").
  const NOT_A_START = new RegExp(
    '(\\d[\\-.·\u2010-\u2015()]{0,2}' +  // more digits: "1400-888-1234", "4008-881-…"
    '|[\\w+]' +  // a letter or "+": part of a code or a licence
    '|\\+\\d+\\s)$');  // another country's code: "+1 400 888 1234"
  // Country calling codes by their first digits (ITU-T E.164 zones); any other is three digits.
  const COUNTRY_CODE = /^(1|7|2[07]|3[0-469]|4[013-9]|5[1-8]|6[0-6]|8[1246]|9[0-58])/;
  const TRUNK_PREFIX = { 1: 1, 7: 8 };  // North America, Russia; elsewhere 0
  const WIDE_OFFSET = 0xfee0;  // from "!" to "！": full-width forms of ASCII

  // ---- Matching and rewriting text: no DOM, they depend only on their arguments and on
  // `matchers`.

  // Full-width digits, letters and punctuation (４００－８８８, （０１０）, ＋８６) as ASCII, one
  // character for one, so that positions carry over to the original.
  function toAscii(text) {
    return text.replace(/[\uff01-\uff5e]/g, (c) => shiftChar(c, -WIDE_OFFSET));
  }

  function shiftChar(c, by) {
    return String.fromCharCode(c.charCodeAt(0) + by);
  }

  function digitsOf(text) {
    return text.replace(/\D/g, '');
  }

  // A leased number ({target, number, extension} from the API) as a matcher [pattern,
  // countryLength, leased]. The pattern finds its target as printed: +CC, 00CC, the country's
  // trunk prefix (010-…, 020 7946 …, "+44 (0)20 …") or nothing, the one group, then the national
  // number with separators between any two digits. The country code decides where that starts.
  function matcherFor(leased) {
    const all = digitsOf(leased.target);
    const country = (all.match(COUNTRY_CODE) || [all.slice(0, 3)])[0];
    const prefixes = ['\\+' + country, '00' + country, TRUNK_PREFIX[country] || 0];
    const national = all.slice(country.length).split('').join(SEPARATORS);
    const pattern = new RegExp(
      '(' + prefixes.join(SEPARATORS + '|') + SEPARATORS + '|)' + national, 'g');
    return [pattern, country.length, leased];
  }

  // Where `text` names a target: hits [start, end, shaped, leased], `shaped` being the tracking
  // number in the original's own shape, or '' to leave it alone (an extension slot cannot
  // replace the shop's own extension).
  function findNumbers(text) {
    const hits = [];
    const plain = toAscii(text);
    matchers.forEach(([pattern, countryLength, leased]) => {
      plain.replace(pattern, (match, prefix, start) => {  // replace() as a loop over matches
        const end = start + match.length;
        const after = plain.slice(end);
        const ownExtension = EXTENSION.test(after);
        if (NOT_A_START.test(plain.slice(0, start)) || !(ownExtension || NUMBER_END.test(after))) {
          return;
        }
        // The original's own prefix, then the tracking number's national digits, written
        // over the original's digits one by one (full-width stays full-width).
        const written = digitsOf(prefix) + digitsOf(leased.number).slice(countryLength);
        let next = 0;
        const shaped = text.slice(start, end).replace(/[0-9０-９]/g, (c) => {
          const digit = written.charAt(next++);
          return digit && c > '9' ? shiftChar(digit, WIDE_OFFSET) : digit;
        }) + written.slice(next);
        hits.push([start, end, leased.extension && ownExtension ? '' : shaped, leased]);
      });
    });
    return hits;
  }

  // `text` with each number written in, as an array of one entry per original character (a
  // longer number grows its last entry), or null if nothing changes. An extension slot is shown
  // as " 转 8015" (" ext. 8015" outside China) or, in a tel: link, dialled as ",,8015".
  function rewrite(text, inLink) {
    const hits = findNumbers(text).filter((hit) => hit[2]);  // those with a shape
    if (!hits.length) return null;
    const chars = text.split('');
    hits.forEach(([start, end, shaped, leased]) => {
      const slot = leased.extension;
      const marker = inLink ? ',,' : /^\+86/.test(leased.target) ? ' 转 ' : ' ext. ';
      const full = shaped + (slot ? marker + slot : '');
      for (let i = start; i < end; i++) chars[i] = full.charAt(i - start);
      chars[end - 1] += full.slice(end - start);
    });
    return chars;
  }

  // A tel: link dials the tracking number in the href's own shape, followed by the shop's own
  // extension if it has one.
  function rewriteTel(href) {
    let body = href.slice(4);
    try { body = decodeURIComponent(body); } catch (e) { /* keep it as written */ }
    const chars = rewrite(body, true);
    return chars ? href.slice(0, 4) + chars.join('') : href;
  }

  // Cookie domain attributes to try, shortest first: the first the browser accepts is the
  // registrable domain (never a public suffix such as com.cn); '' means this host only.
  function cookieDomains(hostname) {
    const labels = hostname.split('.');
    // For shop.example.com.cn: com.cn, example.com.cn, shop.example.com.cn, then ''.
    return labels.slice(1).map((_, i) => '; domain=' + labels.slice(-2 - i).join('.')).concat('');
  }

  // ---- Swapping the page: text nodes and attributes only, each original kept to restore it.

  const LEFT_ALONE = /^(SCRIPT|STYLE|NOSCRIPT|TEXTAREA|INPUT|SELECT|HEAD|TITLE)$/;
  const INLINE = /^(A|B|I|U|S|Q|EM|SUB|SUP|SPAN|FONT|MARK|ABBR|CODE|TIME|LABEL|SMALL|STRONG)$/;
  const TEL_LINK = 'a[href^="tel:" i]';
  const WITH_ATTRIBUTES = TEL_LINK + ',[data-dni-swap]';
  const SWAPPED_ATTRIBUTES = ['alt', 'title', 'aria-label', 'href', 'content'];

  function remember(node, attribute, value) {
    const saved = originals.get(node) || (attribute ? {} : value);
    if (attribute && !(attribute in saved)) saved[attribute] = value;
    originals.set(node, saved);
  }

  function restoreNode(saved, node) {
    if (typeof saved === 'string') node.nodeValue = saved;
    else for (const name in saved) node.setAttribute(name, saved[name]);
    originals.delete(node);
  }

  function restoreAll() {
    originals.forEach(restoreNode);
  }

  function eachTextNode(root, fn) {
    const walker = d.createTreeWalker(root, 4);  // NodeFilter.SHOW_TEXT
    let node;
    while ((node = walker.nextNode())) fn(node);
  }

  // Attribute checks only: isContentEditable would make the browser compute styles.
  function isLeftAlone(el) {
    const editable = el.getAttribute('contenteditable');
    return LEFT_ALONE.test(el.nodeName) || el.hasAttribute('data-dni-noswap') ||
      (editable !== null && editable !== 'false');
  }

  function insideLeftAlone(el) {
    for (; el && el.nodeType === 1; el = el.parentNode) if (isLeftAlone(el)) return true;
    return false;
  }

  // The nearest element that is not inline: its text is read as one string.
  function blockOf(node) {
    let el = node.nodeType === 1 ? node : node.parentNode;
    while (el && el.parentNode && el.nodeType === 1 && INLINE.test(el.nodeName)) el = el.parentNode;
    return el;
  }

  // The text nodes of one block, in order, so that <b>400</b>-888-<i>1234</i> is one number.
  function swapBlockText(nodes) {
    const chars = rewrite(nodes.map((node) => node.nodeValue).join(''));
    if (!chars) return;
    let position = 0;
    nodes.forEach((node) => {
      const before = node.nodeValue;
      const after = chars.slice(position, position += before.length).join('');
      if (after !== before) { remember(node, null, before); node.nodeValue = after; }
    });
  }

  function swapAttributes(el) {
    SWAPPED_ATTRIBUTES.forEach((name) => {
      const before = el.getAttribute(name);
      if (!before) return;
      const after = /^tel:/i.test(before) ? rewriteTel(before) :
        (rewrite(before) || [before]).join('');
      if (after !== before) { remember(el, name, before); el.setAttribute(name, after); }
    });
  }

  // A tel: link and its own text always name the same number: once both had their turn, undo
  // whichever changed alone (the other still names the shop's number).
  function keepLinkAndTextAgreed(link) {
    const saved = originals.get(link) || {};
    const textKeptTarget = findNumbers(link.textContent).length;
    const hrefKeptTarget = findNumbers(link.getAttribute('href').slice(4)).length;
    if (textKeptTarget && !hrefKeptTarget && saved.href) {
      link.setAttribute('href', saved.href);
      delete saved.href;
    }
    if (hrefKeptTarget && !textKeptTarget) {
      eachTextNode(blockOf(link), (node) => {
        if (originals.has(node)) restoreNode(originals.get(node), node);
      });
    }
  }

  // Native walks only (a JS filter per node costs more than the rest of the scan): find the
  // blocks holding digits, then swap each block's text as one string.
  function swapWithin(root) {
    const top = root && blockOf(root);
    if (!numbers.length || !top || insideLeftAlone(top)) return;
    const blocks = new Set();
    eachTextNode(top, (node) => {
      if (/[0-9０-９]/.test(node.nodeValue)) blocks.add(blockOf(node));
    });
    blocks.forEach((block) => {
      // Cheap checks before collecting its text nodes.
      if (!findNumbers(block.textContent).length || insideLeftAlone(block)) return;
      const group = [];
      eachTextNode(block, (node) => {
        if (blockOf(node) === block && !insideLeftAlone(node.parentNode)) group.push(node);
      });
      swapBlockText(group);
    });
    [top, ...top.querySelectorAll(WITH_ATTRIBUTES)].forEach((el) => {
      if (!el.matches(WITH_ATTRIBUTES) || insideLeftAlone(el)) return;
      swapAttributes(el);
      if (el.matches(TEL_LINK)) keepLinkAndTextAgreed(el);
    });
  }

  // Show `list` (restoring the page first), unless it is already shown.
  function show(list) {
    list = list || [];
    if (JSON.stringify(list) === JSON.stringify(numbers) && originals.size) return;
    stopWatching();
    restoreAll();
    numbers = list;
    matchers = list.map(matcherFor);
    swapWithin(d.body || d.documentElement);
    watch();
    swapListeners.forEach(notify);
  }

  function notify(listener) {
    if (numbers.length) guarded(listener)(numbers.slice());
  }

  // ---- Watching the page: content added or changed later, and URL changes that come with it.

  function stopWatching() {
    if (observer) observer.disconnect();
  }

  function watch() {
    if (!numbers.length) return;
    observer = observer || new MutationObserver(guarded((records) => {
      stopWatching();  // our own edits must not come back to us
      records.forEach((record) => {
        if (record.type === 'characterData') swapWithin(record.target);
        record.addedNodes.forEach(swapWithin);
      });
      watch();
      followNavigation();
    }));
    observer.observe(d.documentElement, { childList: true, subtree: true, characterData: true });
  }

  // ---- The visitor id: a first-party cookie on the registrable domain, also in localStorage.

  // A first-party cookie of the page: the first 8 to 64 letters, digits, dots, hyphens or
  // underscores of its value; undefined (so left out of a request body) when it has none.
  function cookie(name) {
    return (d.cookie.match('(?:^|; )' + name + '=([\\w.-]{8,64})') || [])[1];
  }

  function visitorId() {
    const id = cookie('_dni_v') || (storage && storage.getItem('_dni_v')) ||
      'v' + Math.random().toString(36).slice(2) + Date.now().toString(36);
    cookieDomains(location.hostname).some((domain) => {
      d.cookie = '_dni_v=' + id + FOR_A_YEAR + domain;
      return cookie('_dni_v') === id;
    });
    if (storage) storage.setItem('_dni_v', id);
    return id;
  }

  function optedOut() {
    return d.cookie.match('(?:^|; )_dni_optout=1') ||
      (storage && storage.getItem('_dni_optout') === '1');
  }

  // ---- The API: text/plain JSON bodies (no CORS preflight); any failure restores the page.

  // POST to `path` under /v1/visits.
  function send(path, body) {
    // Same-origin credentials only (the default): the API gets none of the shop's cookies but
    // the ones a body names.
    const abort = new AbortController();
    setTimeout(() => abort.abort(), 5000);  // a no-op once the answer is in
    return fetch(apiOrigin + '/v1/visits' + path, {
      method: 'POST', body: JSON.stringify(body), keepalive: true, signal: abort.signal,
    }).then((response) => {
      if (response.status === 404 && visit) { visit = null; return startVisit(); }  // visit expired
      if (!response.ok) throw response.status;
      return response.json().then(receive);
    }).catch(stop);
  }

  function receive(answer) {
    visit = answer.visit;
    answer.t = Date.now();
    answer.site = config.site;
    if (storage) storage.setItem('_dni', JSON.stringify(answer));
    show(answer.numbers);
    clearInterval(heartbeatTimer);
    heartbeatTimer = answer.visit && d.visibilityState !== 'hidden' ?
      setInterval(guarded(heartbeat), (answer.heartbeat || 60) * 1000) : 0;
  }

  // Back to the shop's own numbers.
  function stop() {
    if (storage) storage.removeItem('_dni');
    clearInterval(heartbeatTimer);
    stopWatching();
    restoreAll();
    numbers = [];
  }

  // With the page's own Google Analytics client and Meta browser ids (cookies `_ga`, `_fbp`,
  // there only when the page's consent let those tags set them), for the conversions sent to
  // those platforms. Read, never written; the server checks their shape.
  function startVisit() {
    return send('', {
      site: config.site, visitor: visitorId(), url: currentUrl(), referrer: d.referrer,
      ga: cookie('_ga'), fbp: cookie('_fbp'),
    });
  }

  function heartbeat() {
    if (!started) return;
    return visit ? send('/' + visit + '/heartbeat', { url: currentUrl() }) : startVisit();
  }

  // The page's URL, which the API is about to hear of.
  function currentUrl() {
    return (reportedUrl = location.href);
  }

  // A single-page navigation is reported once, with its new URL.
  function followNavigation() {
    if (location.href !== reportedUrl) heartbeat();
  }

  // ---- Start-up: at once, or on DNI.consent() with data-consent="required".

  const begin = guarded(() => {
    if (started || !config.site || !w.fetch || optedOut()) return;
    started = true;
    // A page after the first: show the visit's numbers while the page parses, then confirm.
    const last = storage && JSON.parse(storage.getItem('_dni'));
    if (last && last.site === config.site && Date.now() - last.t < 6e5) {
      visit = last.visit;
      show(last.numbers);
    }
    startVisit();
    ['visibilitychange', 'pageshow', 'popstate'].forEach((type) => {
      w.addEventListener(type, guarded((event) => {
        if (d.visibilityState === 'hidden') clearInterval(heartbeatTimer);
        else if (type !== 'pageshow' || event.persisted) heartbeat();
      }));
    });
    ['pushState', 'replaceState'].forEach((name) => {
      const native = history[name];
      history[name] = function () {
        setTimeout(guarded(followNavigation));  // once the new URL is in place
        return native.apply(this, arguments);
      };
    });
    // A tap on a tel: link is the strongest signal there is: report it without delaying it.
    d.addEventListener('click', guarded((event) => {
      const link = event.target.closest(TEL_LINK);
      if (link && visit) {
        navigator.sendBeacon(apiOrigin + '/v1/visits/' + visit + '/events',
          JSON.stringify({ type: 'tel_click', number: link.getAttribute('href').slice(4, 44) }));
      }
    }), true);
  });

  // ---- window.DNI: the one global.

  w.DNI = {
    rescan: guarded(() => { stopWatching(); swapWithin(d.body); watch(); }),
    numbers: () => numbers.slice(),
    onSwap: (fn) => {
      swapListeners.push(fn);  // guarded() makes anything but a function harmless
      notify(fn);
    },
    consent: begin,
    optOut: guarded(() => {
      d.cookie = '_dni_optout=1' + FOR_A_YEAR;
      if (storage) storage.setItem('_dni_optout', '1');
      stop();
      started = false;
    }),
  };

  // Node's unit tests (static/snippet/test/load.mjs) define DNI_TEST to receive the DOM-free
  // functions; the build defines it as false, so this block is not in the served file.
  if (typeof DNI_TEST === 'function') {
    DNI_TEST({
      toAscii, digitsOf, matcherFor, findNumbers, rewrite, rewriteTel, cookieDomains,
      lease(list) { matchers = list.map(matcherFor); },
    });
  }

  if (config.consent !== 'required') begin();
})(window, document);
