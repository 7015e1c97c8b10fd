/* Live SMS length counter for the console's send form.
 * Mirrors convo.text.sms.sms_info: GSM-7 when every character is in the GSM 03.38
 * alphabet (extension characters such as € [ ] { } ^ ~ \ | cost 2 septets), else
 * UCS-2 counted in UTF-16 code units; 160/153 septets or 70/67 units per SMS,
 * never splitting an escape or surrogate pair. The character tables come from
 * the server (convo.text.sms), and the GSM look-alike replacements the outbox
 * applies (curly quotes, dashes...) are applied first, so the count matches
 * what is billed. */
(function () {
  "use strict";
  var tables = JSON.parse(document.getElementById("gsm-tables").textContent);
  var basic = new Set(Array.from(tables.basic)), ext = new Set(Array.from(tables.ext));
  var repl = tables.repl;

  function toGsm(text) {
    var out = "";
    for (var ch of text) {
      if (basic.has(ch) || ext.has(ch)) { out += ch; continue; }
      if (Object.prototype.hasOwnProperty.call(repl, ch)) { out += repl[ch]; continue; }
      var d = ch.normalize("NFD");
      while (d.length > 1 && /\p{M}$/u.test(d)) {
        d = d.slice(0, -1);
        if (basic.has(d)) break;
      }
      out += (d.length === 1 && basic.has(d)) ? d : ch;
    }
    return out;
  }

  function segments(units, single, multi) {
    var total = units.reduce(function (a, b) { return a + b; }, 0);
    if (total <= single) return 1;
    var parts = 1, used = 0;
    units.forEach(function (u) { if (used + u > multi) { parts += 1; used = 0; } used += u; });
    return parts;
  }

  function smsInfo(text) {
    var chars = Array.from(text), gsm = chars.every(function (c) { return basic.has(c) || ext.has(c); });
    var units = gsm ? chars.map(function (c) { return basic.has(c) ? 1 : 2; })
                    : chars.map(function (c) { return c.codePointAt(0) > 0xFFFF ? 2 : 1; });
    var total = units.reduce(function (a, b) { return a + b; }, 0);
    return { encoding: gsm ? "GSM-7" : "UCS-2", chars: total,
             segments: gsm ? segments(units, 160, 153) : segments(units, 70, 67) };
  }
  window.convoSmsInfo = function (t) { return smsInfo(toGsm(t)); };

  var box = document.getElementById("text"), counter = document.getElementById("counter");
  function update() {
    var info = smsInfo(toGsm(box.value));
    var per = info.encoding === "GSM-7" ? (info.segments > 1 ? 153 : 160) : (info.segments > 1 ? 67 : 70);
    var left = per * info.segments - info.chars;
    counter.textContent = info.encoding + " · " + info.chars + " characters · " + info.segments +
      (info.segments === 1 ? " SMS" : " SMS segments") + " · " + left + " left";
    counter.className = "counter" + (info.encoding === "UCS-2" ? " ucs2" : "");
    counter.dataset.segments = info.segments;
    counter.dataset.encoding = info.encoding;
  }
  if (box) { box.addEventListener("input", update); update(); }

  var select = document.getElementById("template");
  if (select) {
    select.addEventListener("change", function () {
      document.querySelectorAll(".tvar").forEach(function (p) { p.hidden = p.dataset.template !== select.value; });
      document.getElementById("text-box").hidden = !!select.value;
      counter.hidden = !!select.value;
    });
  }
})();
