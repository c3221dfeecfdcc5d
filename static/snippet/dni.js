/* dni snippet: shows each visitor the tracking numbers leased to their visit.
 * Embed: <script async src="https://dni.example.cn/dni.js" data-site="shop"></script>
 * Optional: data-api (API origin, default: this script's), data-consent="required" (wait for
 * DNI.consent()). Mark elements with data-dni-noswap to leave them alone, with data-dni-swap to
 * also swap their alt/title/aria-label/href/content attributes.
 * It never throws into the page: on any failure the shop's own numbers stay or come back. */
(function (w, d) {
  if (w.DNI) return;
  var script = d.currentScript || {};
  var cfg = script.dataset || {};
  var api = (cfg.api || new URL(script.src || location.href).origin).replace(/\/$/, '');
  var SKIP = /^(SCRIPT|STYLE|NOSCRIPT|TEXTAREA|INPUT|SELECT|HEAD|TITLE)$/;
  var INLINE = /^(A|B|I|U|S|Q|EM|SUB|SUP|SPAN|FONT|MARK|ABBR|CODE|TIME|LABEL|SMALL|STRONG)$/;
  // On text made ASCII: the separators printed between digits, and what may follow a number:
  // the shop's own extension ("转 8015", "ext. 8015", "x8015", "-8015"; in a tel: link ",,8015",
  // ";ext=8015"), hours ("(9:00-18:00)", " 8:00"), another number after a space, or anything
  // but more digits and letters. Before it: anything but digits (or a space), letters, "+" and
  // another country's code ("+1 ").
  var SEP = '[\\s\\-.·\u2010-\u2015()]';
  var EXT = /^(\s*(转|分机|ext\.?|x)\s*|-|,+|;ext=)\d{1,6}(?!\w)/i;
  var END = RegExp('^[\\s(]*\\d\\d?:|^\\s+\\+?\\d(\\d|' + SEP + '{1,2}(?=\\d)){6}|^(?!' + SEP + '{0,2}\\d|[a-z])', 'i');
  var START = RegExp('(\\d[-.·\u2010-\u2015()]{0,2}|[\\w+]|\\+\\d+\\s)$');
  var ATTRS = ['alt', 'title', 'aria-label', 'href', 'content'];
  var TEL = 'a[href^="tel:" i]';
  var SEL = TEL + ',[data-dni-swap]';
  var KEY = '_dni';
  var visit = null;
  var numbers = [];
  var url = '';
  var patterns = [];  // for each number: [RegExp of its target, length of its country code]
  var original = new Map();  // node -> text or {attr: value} before we touched it
  var listeners = [];
  var timer = 0;
  var observer = null;
  var started = false;
  var local = null;
  try { local = w.localStorage; } catch (e) { /* storage refused: cookies only */ }
  var FOR_A_YEAR = '; path=/; max-age=31536000; SameSite=Lax';

  function safe(fn) {
    return function () {
      try { return fn.apply(this, arguments); } catch (e) { /* the page comes first */ }
    };
  }

  // Full-width digits, letters and punctuation (４００－８８８, （０１０）, ＋８６) as ASCII, one
  // character for one, so that positions carry over to the original.
  function ascii(text) {
    return text.replace(/[\uff01-\uff5e]/g, function (c) { return shift(c, -65248); });
  }

  function shift(c, by) {
    return String.fromCharCode(c.charCodeAt(0) + by);
  }

  function digits(text) {
    return text.replace(/\D/g, '');
  }

  // A target number as printed, as a pattern: +CC, 00CC, the country's trunk prefix (1 in North
  // America, 8 in Russia, else 0: 010-…, 020 7946 …, also "+44 (0)20 …") or nothing, then the
  // national number, with separators between any two digits. The country code decides where
  // the national number starts.
  function pattern(e164) {
    var all = digits(e164);
    var cc = (all.match(/^(1|7|2[07]|3[0-469]|4[013-9]|5[1-8]|6[0-6]|8[1246]|9[0-58])/) || [all.slice(0, 3)])[0];
    var s = SEP + '{0,2}';
    return [RegExp('(\\+' + cc + s + '|00' + cc + s + '|' + ({ 1: 1, 7: 8 }[cc] || 0) + s + '|)' +
      all.slice(cc.length).split('').join(s), 'g'), cc.length];
  }

  // Where `text` names a target number: [{s, e, r, n}]: r is the tracking number `n` in the
  // original's own shape, or '' to leave it alone (a slot's extension cannot replace the
  // shop's).
  function find(text) {
    var found = [];
    var plain = ascii(text);
    numbers.forEach(function (n, i) {
      var p = patterns[i];
      plain.replace(p[0], function (match, prefix, s) {
        var e = s + match.length;
        var rest = plain.slice(e);
        var own = EXT.test(rest);
        if (START.test(plain.slice(0, s)) || !(own || END.test(rest))) return;
        var write = digits(prefix) + digits(n.number).slice(p[1]);
        var k = 0;
        found.push({
          s: s,
          e: e,
          r: n.extension && own ? '' : text.slice(s, e).replace(/[0-9０-９]/g, function (c) {
            var ch = write.charAt(k++);
            return ch && c > '9' ? shift(ch, 65248) : ch;
          }) + write.slice(k),
          n: n
        });
      });
    });
    return found;
  }

  // `text` with each hit written in: char by char, any growth after a hit's last character; a
  // slot's extension shown as " 转 8015" (" ext. 8015" outside China) or, in a tel: link, ",,8015".
  // Returns the characters as an array (one entry per original character), or null.
  function spread(text, tel) {
    var hits = find(text).filter(function (m) { return m.r; });
    if (!hits.length) return null;
    var out = text.split('');
    hits.forEach(function (m) {
      var x = m.n.extension;
      var r = m.r + (x ? (tel ? ',,' : /^\+86/.test(m.n.target) ? ' 转 ' : ' ext. ') + x : '');
      for (var j = m.s; j < m.e; j++) out[j] = r.charAt(j - m.s);
      out[m.e - 1] += r.slice(m.e - m.s);
    });
    return out;
  }

  function remember(node, attr, value) {
    var saved = original.get(node) || (attr ? {} : value);
    if (attr && !(attr in saved)) saved[attr] = value;
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

  // A tel: link dials the tracking number in the href's own shape, followed by the shop's own
  // extension if it has one.
  function dial(v) {
    var body = v.slice(4);
    try { body = decodeURIComponent(body); } catch (e) { /* keep it as written */ }
    var out = spread(body, 1);
    return out ? v.slice(0, 4) + out.join('') : v;
  }

  function swapAttrs(el) {
    ATTRS.forEach(function (name) {
      var v = el.getAttribute(name);
      if (!v) return;
      var out = /^tel:/i.test(v) ? dial(v) : (spread(v) || [v]).join('');
      if (out !== v) { remember(el, name, v); el.setAttribute(name, out); }
    });
  }

  function texts(root, fn) {
    var walker = d.createTreeWalker(root, 4);
    for (var t = walker.nextNode(); t; t = walker.nextNode()) fn(t);
  }

  // A tel: link and its own text always name the same number: undo whichever changed alone.
  function agree(a) {
    var saved = original.get(a) || {};
    var text = find(a.textContent).length;
    var href = find(a.getAttribute('href').slice(4)).length;
    if (text && !href && saved.href) { a.setAttribute('href', saved.href); delete saved.href; }
    if (href && !text) {
      texts(block(a), function (t) {
        if (original.has(t)) unswap(original.get(t), t);
      });
    }
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
    texts(top, function (n) {
      if (/[0-9０-９]/.test(n.nodeValue)) blocks.add(block(n));
    });
    blocks.forEach(function (b) {
      if (!find(b.textContent).length || skipped(b)) return;  // cheap test first
      var group = [];
      texts(b, function (t) {
        if (block(t) === b && !skipped(t.parentNode)) group.push(t);
      });
      swapBlock(group);
    });
    [top, ...top.querySelectorAll(SEL)].forEach(function (el) {
      if (!el.matches(SEL) || skipped(el)) return;
      swapAttrs(el);
      if (el.matches(TEL)) agree(el);
    });
  }

  function unswap(value, node) {
    if (typeof value === 'string') node.nodeValue = value;
    else for (var name in value) node.setAttribute(name, value[name]);
    original.delete(node);
  }

  function restore() {
    original.forEach(unswap);
  }

  function apply(list) {
    list = list || [];
    if (JSON.stringify(list) === JSON.stringify(numbers) && original.size) return;
    pause();
    restore();
    numbers = list;
    patterns = list.map(function (n) { return pattern(n.target); });
    scan(d.body || d.documentElement);
    watch();
    if (numbers.length) listeners.forEach(function (fn) { safe(fn)(numbers.slice()); });
  }

  function pause() { if (observer) observer.disconnect(); }

  function watch() {
    if (!numbers.length) return;
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

  function visitorId() {
    var found = d.cookie.match(/(?:^|; )_dni_v=([\w.-]{8,64})/);
    var id = (found && found[1]) || (local && local.getItem('_dni_v')) ||
      'v' + Math.random().toString(36).slice(2) + Date.now().toString(36);
    var labels = location.hostname.split('.');
    // The shortest parent domain that accepts a cookie is the registrable one: never com.cn.
    for (var i = labels.length - 2; i >= -1; i--) {
      var domain = i < 0 ? '' : '; domain=' + labels.slice(i).join('.');
      d.cookie = '_dni_v=' + id + FOR_A_YEAR + domain;
      if (d.cookie.indexOf('_dni_v=' + id) >= 0) break;
    }
    if (local) local.setItem('_dni_v', id);
    return id;
  }

  function send(path, body) {
    // Same-origin credentials only (the default): the API never sees the shop's cookies.
    var ctl = new AbortController();
    setTimeout(function () { ctl.abort(); }, 5000);  // a no-op once the answer is in
    return fetch(api + path, { method: 'POST', body: JSON.stringify(body), keepalive: true, signal: ctl.signal })
      .then(function (r) {
        if (r.status === 404 && visit) { visit = null; return start(); }
        if (!r.ok) throw r.status;
        return r.json().then(answer);
      })
      .catch(fail);
  }

  function answer(body) {
    visit = body.visit;
    url = location.href;
    if (local) local.setItem(KEY, JSON.stringify({ t: Date.now(), visit: body.visit, numbers: body.numbers, site: cfg.site }));
    apply(body.numbers);
    clearInterval(timer);
    timer = body.visit && d.visibilityState !== 'hidden' ? setInterval(safe(beat), (body.heartbeat || 60) * 1000) : 0;
  }

  function fail() {
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
    return /(?:^|; )_dni_optout=1/.test(d.cookie) || (local && local.getItem('_dni_optout') === '1');
  }

  var go = safe(function () {
    if (started || !cfg.site || !w.fetch || optedOut()) return;
    started = true;
    // A page after the first: show the visit's numbers while the page parses, then confirm.
    var saved = local && JSON.parse(local.getItem(KEY));
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
      setTimeout(safe(beat));  // once the new URL is in place
      return push.apply(this, arguments);
    };
    d.addEventListener('click', safe(function (e) {
      var a = e.target.closest(TEL);
      if (a && visit) {
        navigator.sendBeacon(api + '/v1/visits/' + visit + '/events',
          JSON.stringify({ type: 'tel_click', number: a.getAttribute('href').slice(4, 44) }));
      }
    }), true);
  });

  w.DNI = {
    rescan: safe(function () { pause(); scan(d.body); watch(); }),
    numbers: function () { return numbers.slice(); },
    onSwap: function (fn) {
      listeners.push(fn);  // safe() below makes anything but a function harmless
      if (numbers.length) safe(fn)(numbers.slice());
    },
    consent: go,
    optOut: safe(function () {
      d.cookie = '_dni_optout=1' + FOR_A_YEAR;
        if (local) local.setItem('_dni_optout', '1');
      fail();
      started = false;
    })
  };
  if (cfg.consent !== 'required') go();
})(window, document);
