/* dni snippet: shows each visitor the tracking numbers leased to their visit.
 * Embed: <script async src="https://dni.example.cn/dni.js" data-site="shop"></script>
 * Optional: data-api (API origin, default: this script's), data-consent="required" (wait for
 * DNI.consent()). Mark elements with data-dni-noswap to leave them alone, with data-dni-swap to
 * also swap their alt/title/aria-label/href/content attributes.
 * It never throws into the page: on any failure the shop's own numbers stay or come back. */
(function (w, d) {
  'use strict';
  if (w.DNI) return;
  var script = d.currentScript || {};
  var cfg = script.dataset || {};
  var api = (cfg.api || new URL(script.src || location.href).origin).replace(/\/$/, '');
  var SKIP = /^(SCRIPT|STYLE|NOSCRIPT|TEXTAREA|INPUT|SELECT|OPTION|TEMPLATE|IFRAME|SVG|HEAD|TITLE)$/;
  var INLINE = /^(A|B|I|U|S|Q|EM|TT|BIG|SUB|SUP|SPAN|FONT|MARK|ABBR|CODE|TIME|LABEL|SMALL|STRONG)$/;
  // A phone number as printed: optional +86/0086, digits (also full-width) and separators,
  // and optionally the shop's own extension ("转 8", "ext. 8").
  var RUN = /(?:[+＋]|00)?[0-9０-９](?:[0-9０-９]|[ \u00a0\-.·—()（）](?=[ \u00a0\-.·—()（）]?[0-9０-９])){6,20}(?:\s*(?:转|分机|ext\.?|x)\s*[0-9０-９]{1,6})?/gi;
  var ATTRS = ['alt', 'title', 'aria-label', 'href', 'content'];
  var SEL = 'a[href^="tel:" i],[data-dni-swap]';
  var KEY = '_dni';
  var visit = null;
  var numbers = [];
  var url = '';
  var original = new Map();  // node -> text or {attr: value} before we touched it
  var listeners = [];
  var timer = 0;
  var observer = null;
  var started = false;

  function safe(fn) {
    return function () {
      try { return fn.apply(this, arguments); } catch (e) { /* the page comes first */ }
    };
  }

  function ascii(text) {
    return text.replace(/[０-９]/g, function (c) { return String.fromCharCode(c.charCodeAt(0) - 65248); });
  }

  // Digits to compare with: +86 4008881234, 0086..., 86... and 400-888-1234 all give 4008881234.
  function national(text) {
    var digits = ascii(text).replace(/\D/g, '');
    if (/^(\+|00)/.test(text.trim())) digits = digits.replace(/^(00)?(86|1)/, '');
    return digits;
  }

  function lookup(digits) {
    for (var i = 0; i < numbers.length; i++) {
      if (national(numbers[i].target) === digits) return numbers[i];
    }
    return null;
  }

  // The tracking number in the original's own shape: same prefix, separators and digit width.
  function reshape(text, n) {
    var m = /^(.*?)\s*(转|分机|ext\.?|x)\s*[0-9０-９]+$/i.exec(text);
    var base = m ? m[1] : text;
    var tail = text.slice(base.length);  // the shop's own " 转 8", if any
    var digits = national(n.number);
    var p = base.match(/^(?:[+＋]|00)(?:8[\s\u00a0]?6|1)[\s\u00a0\-.]?/);
    var prefix = p ? p[0] : '';
    var body = base.slice(prefix.length);
    var i = 0;
    var out = national(body).length === digits.length
      ? body.replace(/[0-9０-９]/g, function (c) {
        var ch = digits.charAt(i++);
        return c > '9' ? String.fromCharCode(ch.charCodeAt(0) + 65248) : ch;
      })
      : digits;
    // A tracking slot's own extension replaces the shop's; a whole tracking number needs none.
    var ext = n.extension
      ? (m ? tail.replace(/[0-9０-９]+$/, n.extension) : (/^\+86/.test(n.target) ? ' 转 ' : ' ext. ') + n.extension)
      : '';
    return prefix + out + ext;
  }

  // Where `text` holds a target number: [{s: start, e: end, r: replacement}].
  function find(text) {
    var found = [];
    text.replace(RUN, function (match, at) {
      if (/[0-9０-９A-Za-z]/.test(text.charAt(at - 1) + text.charAt(at + match.length))) return;
      var n = lookup(national(match.replace(/\s*(转|分机|ext\.?|x)\s*[0-9０-９]+$/i, '')));
      if (n) found.push({ s: at, e: at + match.length, r: reshape(match, n) });
    });
    return found;
  }

  // `text` with each hit written in: char by char, any growth after a hit's last character.
  // Returns the characters as an array (one entry per original character), or null.
  function spread(text) {
    var hits = find(text);
    if (!hits.length) return null;
    var out = text.split('');
    hits.forEach(function (m) {
      for (var j = m.s; j < m.e; j++) out[j] = m.r.charAt(j - m.s);
      out[m.e - 1] += m.r.slice(m.e - m.s);
    });
    return out;
  }

  function remember(node, attr, value) {
    var saved = original.get(node);
    if (!attr) { if (saved === undefined) original.set(node, value); return; }
    saved = saved || {};
    if (!(attr in saved)) saved[attr] = value;
    original.set(node, saved);
  }

  // Text nodes of one block, in order, so that <b>400</b>-888-<i>1234</i> is one number.
  function swapBlock(nodes) {
    var out = spread(nodes.map(function (n) { return n.nodeValue; }).join(''));
    if (!out) return;
    var pos = 0;
    nodes.forEach(function (node) {
      var v = node.nodeValue;
      var next = out.slice(pos, pos += v.length).join('');
      if (next !== v) { remember(node, null, v); node.nodeValue = next; }
    });
  }

  function swapAttrs(el) {
    ATTRS.forEach(function (name) {
      var v = el.getAttribute(name);
      if (!v) return;
      var out = (spread(v) || [v]).join('');
      if (name === 'href' && /^tel:/i.test(v)) {
        var n = lookup(national(decodeURIComponent(v.slice(4).split(/[,;]/)[0])));
        if (!n) return;
        out = 'tel:' + (/^tel:\+/i.test(v) ? n.number : national(n.number)) + (n.extension ? ',,' + n.extension : '');
      }
      if (out !== v) { remember(el, name, v); el.setAttribute(name, out); }
    });
  }

  // Attribute checks only: isContentEditable would make the browser compute styles.
  function off(el) {
    var edit = el.getAttribute('contenteditable');
    return SKIP.test(el.nodeName) || el.hasAttribute('data-dni-noswap') || (edit !== null && edit !== 'false');
  }

  function skipped(el) {
    for (; el && el.nodeType === 1; el = el.parentNode) if (off(el)) return true;
    return false;
  }

  function block(node) {
    var el = node.nodeType === 1 ? node : node.parentNode;
    while (el && el.parentNode && el.nodeType === 1 && INLINE.test(el.nodeName)) el = el.parentNode;
    return el;
  }

  // Native walks only (a JS filter per node costs more than the rest of the scan): find the
  // blocks holding digits, then swap each block's text as one string.
  function scan(root) {
    var top = root && block(root);
    if (!numbers.length || !top || skipped(top)) return;
    var blocks = new Set();
    var walker = d.createTreeWalker(top, 4);
    for (var n = walker.nextNode(); n; n = walker.nextNode()) {
      if (/[0-9０-９]/.test(n.nodeValue)) blocks.add(block(n));
    }
    blocks.forEach(function (b) {
      if (!find(b.textContent).length || skipped(b)) return;  // cheap test first
      var group = [];
      var inner = d.createTreeWalker(b, 4);
      for (var t = inner.nextNode(); t; t = inner.nextNode()) {
        if (block(t) === b && !skipped(t.parentNode)) group.push(t);
      }
      swapBlock(group);
    });
    [top].concat([].slice.call(top.querySelectorAll(SEL))).forEach(function (el) {
      if (el.matches(SEL) && !skipped(el)) swapAttrs(el);
    });
  }

  function restore() {
    original.forEach(function (value, node) {
      if (typeof value === 'string') node.nodeValue = value;
      else for (var name in value) node.setAttribute(name, value[name]);
    });
    original.clear();
  }

  function apply(list) {
    list = list || [];
    if (JSON.stringify(list) === JSON.stringify(numbers) && original.size) return;
    pause();
    restore();
    numbers = list;
    scan(d.body || d.documentElement);
    watch();
    if (numbers.length) listeners.forEach(function (fn) { safe(fn)(numbers.slice()); });
  }

  function pause() { if (observer) observer.disconnect(); }

  function watch() {
    if (!w.MutationObserver || !numbers.length) return;
    observer = observer || new MutationObserver(safe(function (records) {
      pause();  // our own edits must not come back to us
      records.forEach(function (r) {
        if (r.type === 'characterData') scan(r.target);
        for (var j = 0; j < r.addedNodes.length; j++) scan(r.addedNodes[j]);
      });
      watch();
      if (location.href !== url) beat();
    }));
    observer.observe(d.documentElement, { childList: true, subtree: true, characterData: true });
  }

  function storage(name) {
    try { return w[name]; } catch (e) { return null; }
  }

  function visitorId() {
    var found = d.cookie.match(/(?:^|; )_dni_v=([\w.-]{8,64})/);
    var local = storage('localStorage');
    var id = (found && found[1]) || (local && local.getItem('_dni_v')) ||
      'v' + Date.now().toString(36) + Math.random().toString(36).slice(2, 12);
    var labels = location.hostname.split('.');
    // The shortest parent domain that accepts a cookie is the registrable one: never com.cn.
    for (var i = labels.length - 2; i >= -1; i--) {
      var domain = i < 0 ? '' : '; domain=' + labels.slice(i).join('.');
      d.cookie = '_dni_v=' + id + '; path=/; max-age=31536000; SameSite=Lax' + domain;
      if (d.cookie.indexOf('_dni_v=' + id) >= 0) break;
    }
    if (local) local.setItem('_dni_v', id);
    return id;
  }

  function send(path, body) {
    var ctl = w.AbortController ? new AbortController() : null;
    var t = setTimeout(function () { if (ctl) ctl.abort(); }, 5000);
    return fetch(api + path, { method: 'POST', body: JSON.stringify(body), keepalive: true, credentials: 'omit', signal: ctl && ctl.signal })
      .then(function (r) {
        clearTimeout(t);
        if (r.status === 404 && visit) { visit = null; return start(); }
        if (!r.ok) throw r.status;
        return r.json().then(answer);
      })
      .catch(fail);
  }

  function answer(body) {
    visit = body.visit;
    url = location.href;
    var local = storage('localStorage');
    if (local) local.setItem(KEY, JSON.stringify({ t: Date.now(), visit: body.visit, numbers: body.numbers, site: cfg.site }));
    apply(body.numbers);
    clearInterval(timer);
    timer = body.visit && d.visibilityState !== 'hidden' ? setInterval(safe(beat), (body.heartbeat || 60) * 1000) : 0;
  }

  function fail() {
    var local = storage('localStorage');
    if (local) local.removeItem(KEY);
    clearInterval(timer);
    pause();
    restore();
    numbers = [];
  }

  function start() {
    return send('/v1/visits', { site: cfg.site, visitor: visitorId(), url: location.href, referrer: d.referrer });
  }

  function beat() {
    if (!started) return;
    url = location.href;
    return visit ? send('/v1/visits/' + visit + '/heartbeat', { url: location.href }) : start();
  }

  function optedOut() {
    var local = storage('localStorage');
    return /(?:^|; )_dni_optout=1/.test(d.cookie) || (local && local.getItem('_dni_optout') === '1');
  }

  var go = safe(function () {
    if (started || !cfg.site || !w.fetch || optedOut()) return;
    started = true;
    // A page after the first: show the visit's numbers while the page parses, then confirm.
    var local = storage('localStorage');
    var saved = local && JSON.parse(local.getItem(KEY) || 'null');
    if (saved && saved.site === cfg.site && Date.now() - saved.t < 6e5) {
      visit = saved.visit;
      apply(saved.numbers);
    }
    start();
    ['visibilitychange', 'pageshow', 'popstate'].forEach(function (type) {
      w.addEventListener(type, safe(function (e) {
        if (d.visibilityState === 'hidden') clearInterval(timer);
        else if (type !== 'pageshow' || e.persisted) beat();
      }));
    });
    var push = history.pushState;
    history.pushState = function () {
      var result = push.apply(this, arguments);
      safe(beat)();
      return result;
    };
    d.addEventListener('click', safe(function (e) {
      var a = e.target.closest && e.target.closest('a[href^="tel:" i]');
      if (a && visit && navigator.sendBeacon) {
        navigator.sendBeacon(api + '/v1/visits/' + visit + '/events',
          JSON.stringify({ type: 'tel_click', number: a.getAttribute('href').slice(4, 44) }));
      }
    }), true);
  });

  w.DNI = {
    rescan: safe(function () { pause(); scan(d.body); watch(); }),
    numbers: function () { return numbers.slice(); },
    onSwap: function (fn) {
      if (typeof fn !== 'function') return;
      listeners.push(fn);
      if (numbers.length) safe(fn)(numbers.slice());
    },
    consent: go,
    optOut: safe(function () {
      d.cookie = '_dni_optout=1; path=/; max-age=31536000; SameSite=Lax';
      var local = storage('localStorage');
      if (local) local.setItem('_dni_optout', '1');
      fail();
      started = false;
    })
  };
  if (cfg.consent !== 'required') go();
})(window, document);
