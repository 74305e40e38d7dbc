// evolve viewer: keeps a page live while a run writes, without a reload.
// It polls a tiny version endpoint; when the version changes it fetches the page
// again and swaps every [data-live] block. The new HTML is the server's own,
// autoescaped; it is parsed into an inert document (scripts in it never run) and
// the page's CSP forbids inline script anyway.
(function () {
  "use strict";
  var body = document.body;
  var url = body.getAttribute("data-live-url");
  var every = parseInt(body.getAttribute("data-poll-ms"), 10) || 2000;
  var status = document.getElementById("live-status");
  var last = null;
  var busy = false;

  function say(state, text) {
    if (!status) { return; }
    status.setAttribute("data-state", state);
    status.textContent = text;
  }

  function swap(html) {
    var fresh = new DOMParser().parseFromString(html, "text/html");
    var blocks = document.querySelectorAll("[data-live]");
    for (var i = 0; i < blocks.length; i++) {
      var name = blocks[i].getAttribute("data-live");
      var next = fresh.querySelector('[data-live="' + name + '"]');
      if (next) { blocks[i].replaceChildren.apply(blocks[i], Array.from(next.childNodes)); }
    }
    body.setAttribute("data-updates", String((parseInt(body.getAttribute("data-updates"), 10) || 0) + 1));
  }

  function tick() {
    if (busy || document.hidden) { return; }
    busy = true;
    fetch(url, {cache: "no-store"}).then(function (r) {
      if (!r.ok) { throw new Error(String(r.status)); }
      return r.json();
    }).then(function (data) {
      if (last !== null && data.version !== last) {
        return fetch(location.href, {cache: "no-store"}).then(function (r) { return r.text(); })
          .then(function (html) { swap(html); last = data.version; });
      }
      last = data.version;
    }).then(function () {
      say("on", "live · " + new Date().toLocaleTimeString());
    }).catch(function () {
      say("error", "not updating (server unreachable)");
    }).then(function () { busy = false; });
  }

  if (url) {
    tick();
    setInterval(tick, every);
    document.addEventListener("visibilitychange", tick);
  }
}());
