/* dni snippet: swaps the shop's phone numbers for the visit's tracking numbers.
 * Embed: <script async src="https://dni.example.cn/dni.js" data-site="shop"></script>
 * Never throws into the page; on any failure the shop's own numbers stay (or come back). */
(function (w, d) {
  'use strict';
  if (w.DNI) return;
  var script = d.currentScript;
  var cfg = script ? script.dataset : {};
  var api = (cfg.api || (script && script.src ? new URL(script.src).origin : '')).replace(/\/$/, '');
  var SKIP = /^(SCRIPT|STYLE|NOSCRIPT|TEXTAREA|INPUT|SELECT|OPTION|TEMPLATE|CODE|PRE)$/;
  var RUN = /[+＋]?[0-9０-９][0-9０-９ \-.·—()（）]{5,22}[0-9０-９]/g;
  var swaps = [];       // {node, attr, original}
  var numbers = [];     // [{target, number, extension}]
  var visit = null;
  var timer = null;
  var observer = null;
  var listeners = [];

  function safe(fn) {
    return function () {
      try { return fn.apply(this, arguments); } catch (e) { /* the page comes first */ }
    };
  }

  function ascii(text) {
    return text.replace(/[０-９]/g, function (c) { return String.fromCharCode(c.charCodeAt(0) - 65248); });
  }

  // National digits of an E.164 number: +864008881234 -> 4008881234 (China), else drop "+".
  function national(e164) {
    return e164.indexOf('+86') === 0 ? e164.slice(3) : e164.replace(/^\+1/, '').replace(/^\+/, '');
  }

  function digitsOf(text) {
    var digits = ascii(text).replace(/[^0-9]/g, '');
    if (/^(0086|86)/.test(digits) && /^[+＋0]|^86/.test(text.trim())) digits = digits.replace(/^(0086|86)/, '');
    if (digits.length === 11 && digits.charAt(0) === '1' && /^\+?1/.test(text.trim())) digits = digits.slice(1);
    return digits;
  }

  // Write `digits` into the digit positions of `text`, keeping its separators and width.
  function reshape(text, digits) {
    var prefix = text.match(/^[+＋]?(0086|86|1)?[ \-.]?/)[0];
    var body = text.slice(prefix.length);
    var slots = ascii(body).replace(/[^0-9]/g, '').length;
    if (slots !== digits.length) return prefix + digits;
    var i = 0;
    return prefix + body.replace(/[0-9０-９]/g, function (c) {
      var n = digits.charAt(i++);
      return c.charCodeAt(0) > 127 ? String.fromCharCode(n.charCodeAt(0) + 65248) : n;
    });
  }

  function replacement(match) {
    var found = digitsOf(match);
    for (var i = 0; i < numbers.length; i++) {
      var n = numbers[i];
      if (found === national(n.target)) {
        var text = reshape(match, national(n.number));
        return n.extension ? text + ' 转 ' + n.extension : text;
      }
    }
    return null;
  }

  function swapText(node) {
    var text = node.nodeValue;
    var changed = false;
    var out = text.replace(RUN, function (match, offset) {
      var before = text.charAt(offset - 1);
      var after = text.charAt(offset + match.length);
      if (/[0-9０-９A-Za-z]/.test(before) || /[0-9０-９A-Za-z]/.test(after)) return match;
      var r = replacement(match);
      if (r === null) return match;
      changed = true;
      return r;
    });
    if (changed) {
      swaps.push({ node: node, attr: null, original: text });
      node.nodeValue = out;
    }
  }

  function swapLink(el) {
    var href = el.getAttribute('href') || '';
    var m = /^tel:([^,;]*)/i.exec(href);
    if (!m) return;
    var found = digitsOf(decodeURIComponent(m[1]));
    for (var i = 0; i < numbers.length; i++) {
      var n = numbers[i];
      if (found === national(n.target)) {
        var dial = m[1].charAt(0) === '+' ? n.number : national(n.number);
        swaps.push({ node: el, attr: 'href', original: href });
        el.setAttribute('href', 'tel:' + dial + (n.extension ? ',,' + n.extension : ''));
        el.setAttribute('data-dni-number', n.number + (n.extension ? ',' + n.extension : ''));
        return;
      }
    }
  }

  function skipped(el) {
    for (; el && el.nodeType === 1; el = el.parentNode) {
      if (SKIP.test(el.nodeName) || el.isContentEditable || el.hasAttribute('data-dni-noswap')) return true;
    }
    return false;
  }

  function scan(root) {
    if (!numbers.length || !root || skipped(root.nodeType === 1 ? root : root.parentNode)) return;
    if (root.nodeType === 3) { swapText(root); return; }
    var walker = d.createTreeWalker(root, NodeFilter.SHOW_TEXT | NodeFilter.SHOW_ELEMENT, {
      acceptNode: function (n) {
        var skip = n.nodeType === 1 && (SKIP.test(n.nodeName) || n.isContentEditable || n.hasAttribute('data-dni-noswap'));
        return skip ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT;
      }
    });
    if (root.nodeType === 1 && root.nodeName === 'A') swapLink(root);
    for (var n = walker.nextNode(); n; n = walker.nextNode()) {
      if (n.nodeType === 3) swapText(n); else if (n.nodeName === 'A') swapLink(n);
    }
  }

  function restore() {
    if (observer) observer.disconnect();
    for (var i = swaps.length - 1; i >= 0; i--) {
      var s = swaps[i];
      if (s.attr) s.node.setAttribute(s.attr, s.original); else s.node.nodeValue = s.original;
    }
    swaps = [];
    numbers = [];
  }

  function apply(list) {
    var same = JSON.stringify(list) === JSON.stringify(numbers);
    if (same && swaps.length) return;
    restore();
    numbers = list;
    if (!numbers.length) return;
    scan(d.body || d.documentElement);
    watch();
    for (var i = 0; i < listeners.length; i++) safe(listeners[i])(numbers.slice());
  }

  function watch() {
    if (!w.MutationObserver || !d.body) return;
    observer = observer || new MutationObserver(safe(function (records) {
      observer.disconnect();  // our own edits must not feed back
      for (var i = 0; i < records.length; i++) {
        var r = records[i];
        if (r.type === 'characterData') scan(r.target);
        for (var j = 0; j < r.addedNodes.length; j++) scan(r.addedNodes[j]);
      }
      watch();
    }));
    observer.observe(d.body, { childList: true, subtree: true, characterData: true });
  }

  function visitorId() {
    var name = '_dni_v';
    var m = d.cookie.match(/(?:^|; )_dni_v=([A-Za-z0-9_.-]{8,64})/);
    var id = m ? m[1] : null;
    try { id = id || w.localStorage.getItem(name); } catch (e) { /* storage blocked */ }
    id = id || ('v' + Date.now().toString(36) + Math.random().toString(36).slice(2, 12));
    var labels = location.hostname.split('.');
    // The shortest parent domain that takes a cookie is the registrable one (never com.cn).
    for (var i = labels.length - 2; i >= 0; i--) {
      var domain = labels.slice(i).join('.');
      d.cookie = name + '=' + id + '; path=/; max-age=31536000; SameSite=Lax; domain=' + domain;
      if (d.cookie.indexOf(name + '=' + id) >= 0) break;
    }
    if (d.cookie.indexOf(name + '=' + id) < 0) d.cookie = name + '=' + id + '; path=/; max-age=31536000; SameSite=Lax';
    try { w.localStorage.setItem(name, id); } catch (e) { /* storage blocked */ }
    return id;
  }

  function post(path, body) {
    return fetch(api + path, { method: 'POST', body: JSON.stringify(body), keepalive: true, credentials: 'omit' })
      .then(function (r) {
        if (r.status === 404 && path !== '/v1/visits') return start();
        if (!r.ok) throw new Error(r.status);
        return r.json().then(answer);
      });
  }

  function answer(body) {
    visit = body.visit;
    try { w.sessionStorage.setItem('_dni_s', JSON.stringify(body)); } catch (e) { /* storage blocked */ }
    apply(body.numbers || []);
    schedule((body.heartbeat || 60) * 1000);
  }

  function fail() {
    try { w.sessionStorage.removeItem('_dni_s'); } catch (e) { /* storage blocked */ }
    restore();
    stop();
  }

  function start() {
    return post('/v1/visits', { site: cfg.site, visitor: visitorId(), url: location.href, referrer: d.referrer }).catch(fail);
  }

  function beat() {
    if (!visit) return start();
    return post('/v1/visits/' + visit + '/heartbeat', { url: location.href }).catch(fail);
  }

  function stop() { if (timer) clearInterval(timer); timer = null; }

  function schedule(ms) {
    stop();
    if (visit && d.visibilityState === 'visible') timer = setInterval(safe(beat), ms);
  }

  var boot = safe(function () {
    if (!cfg.site || !w.fetch || cfg.optout !== undefined) return;
    try {
      var remembered = JSON.parse(w.sessionStorage.getItem('_dni_s') || 'null');
      if (remembered) { visit = remembered.visit; numbers = []; }
      var early = safe(function () { if (remembered) apply(remembered.numbers || []); });
      if (d.readyState === 'loading') d.addEventListener('DOMContentLoaded', early); else early();
    } catch (e) { /* storage blocked */ }
    var go = safe(function () { start(); });
    if (d.readyState === 'loading') d.addEventListener('DOMContentLoaded', go); else go();
    d.addEventListener('visibilitychange', safe(function () {
      if (d.visibilityState === 'visible') beat(); else stop();
    }));
    d.addEventListener('click', safe(function (e) {
      var a = e.target && e.target.closest ? e.target.closest('a[href^="tel:"]') : null;
      if (!a || !visit) return;
      var body = JSON.stringify({ type: 'tel_click', number: a.getAttribute('data-dni-number') || a.getAttribute('href').slice(4) });
      if (navigator.sendBeacon) navigator.sendBeacon(api + '/v1/visits/' + visit + '/events', body);
    }), true);
  });

  w.DNI = {
    rescan: safe(function () { scan(d.body); }),
    numbers: function () { return numbers.slice(); },
    // Called after every swap, and at once if numbers are already swapped.
    onSwap: function (fn) {
      if (typeof fn !== 'function') return;
      listeners.push(fn);
      if (numbers.length) safe(fn)(numbers.slice());
    }
  };
  boot();
})(window, document);
