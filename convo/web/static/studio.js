// The studio's phone: dials the flow in the server's sandbox (simulator, never Mifos X) and shows
// the USSD screen (160 characters, the engine's own paging) or the SMS thread, and the variables.
(function () {
  "use strict";
  var box = document.getElementById("phone");
  if (!box) { return; }
  var screen = document.getElementById("phone-screen");
  var thread = document.getElementById("phone-thread");
  var input = document.getElementById("phone-input");
  var where = document.getElementById("phone-where");
  var varsBody = document.querySelector("#phone-vars tbody");
  var s = { session: null, inputs: [], channel: "ussd", ended: true };

  function newId() {
    var a = new Uint8Array(12);
    window.crypto.getRandomValues(a);
    return Array.prototype.map.call(a, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  function showVars(vars) {
    while (varsBody.firstChild) { varsBody.removeChild(varsBody.firstChild); }
    Object.keys(vars || {}).sort().forEach(function (k) {
      var tr = document.createElement("tr");
      var a = document.createElement("td"); a.textContent = k; a.className = "var-name";
      var b = document.createElement("td"); b.textContent = JSON.stringify(vars[k]); b.className = "var-value";
      tr.appendChild(a); tr.appendChild(b); tr.dataset.name = k;
      varsBody.appendChild(tr);
    });
  }

  function say(cls, text) {
    var li = document.createElement("li");
    li.className = cls; li.textContent = text;
    thread.appendChild(li);
    thread.scrollTop = thread.scrollHeight;
  }

  function hop(text, fresh) {
    var body = {
      csrf: box.dataset.csrf, flow: box.dataset.flow, preview: box.dataset.preview || null,
      channel: s.channel, phone: document.getElementById("phone-number").value,
      lang: document.getElementById("phone-lang").value, session: s.session, text: text, fresh: fresh
    };
    box.dataset.busy = "true";
    return fetch(box.dataset.url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(body)
    }).then(function (r) {
      return r.json().then(function (j) { return { ok: r.ok, j: j }; });
    }).then(function (res) {
      box.dataset.busy = "false";
      if (!res.ok) { screen.textContent = "!! " + (res.j.error || "error"); return; }
      var j = res.j;
      s.ended = j.end;
      if (s.channel === "ussd") {
        screen.textContent = j.text;
        screen.dataset.end = j.end ? "true" : "false";
        screen.dataset.length = String(j.text.length);
      } else if (j.text) {
        say("them", j.text);
      }
      where.textContent = (j.flow || "") + " · " + (j.state || "") + (j.pages > 1 ? " · screen " + (j.page + 1) + "/" + j.pages : "") +
        (j.end ? " · ended" : "");
      where.dataset.state = j.state || "";
      showVars(j.vars);
      box.dataset.steps = String(Number(box.dataset.steps || "0") + 1);
    }).catch(function (e) {
      box.dataset.busy = "false";
      screen.textContent = "!! " + e;
    });
  }

  document.getElementById("phone-dial").addEventListener("click", function () {
    s.channel = document.getElementById("phone-channel").value;
    s.session = newId(); s.inputs = [];
    screen.textContent = ""; while (thread.firstChild) { thread.removeChild(thread.firstChild); }
    screen.hidden = s.channel !== "ussd";
    if (s.channel === "sms") {
      say("me", box.dataset.keyword);
      hop(box.dataset.keyword, true);
    } else {
      hop("", true);
    }
    input.focus();
  });

  document.getElementById("phone-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var v = input.value;
    input.value = "";
    if (s.channel === "ussd") {
      if (s.ended) { return; }
      s.inputs.push(v);
      hop(s.inputs.join("*"), false);
    } else {
      say("me", v);
      hop(v, false);
    }
  });
}());
