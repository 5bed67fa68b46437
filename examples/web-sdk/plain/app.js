// A plain page with the deskbridge web SDK: the chat opens anonymously,
// becomes the customer's when they sign in, and is cleared when they sign out.
(function () {
  "use strict";
  const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
  const D = window.Deskbridge;
  // What the tests read; a real page would show the chat instead.
  const seen = (window.example = { events: [], errors: [], identityChanges: [], refreshes: 0 });

  // The customer's login, from this site's own server: a fresh token every
  // time (the server keeps the session; the page keeps no token).
  function contextProvider(callback) {
    fetch("/fresh-token", { method: "POST", credentials: "same-origin" })
      .then((r) => (r.ok ? r.json() : Promise.reject(new Error(`fresh-token: ${r.status}`))))
      .then((t) => callback({ auth: { token: t.JWT, expiresIn: Number(t.expires_in) } }))
      .catch(() => callback(null)); // none now: the SDK asks again later
  }

  // Listeners may be added before load(); they stay across load() and clear().
  D.on("state", (s) => {
    const el = $("status");
    el.textContent = s.status === "failed" ? `failed (${s.reason})` : `${s.status}, ${s.login}`;
    el.dataset.status = s.status;
    el.dataset.login = s.login;
    el.dataset.reason = s.reason || "";
    $("external-ref").textContent = s.externalRef || "none";
  });
  D.on("error", (e) => {
    seen.errors.push(`${e.where}:${e.code}`);
    $("problem").textContent = e.message;
  });
  D.on("identity_changed", (e) => seen.identityChanges.push(e.reason));
  D.on("refresh", () => (seen.refreshes += 1));

  let config;
  // The company's chat widget's id for this chat (its chat or ticket id at
  // the desk), here from ?chat=: the desk finds the conversation by it. A
  // widget that learns it later calls D.setExternalRef(id) then.
  let chatId = new URLSearchParams(location.search).get("chat");

  function start(me) {
    const options = { gateway: config.gateway, appKey: config.appKey, channel: config.channel, connection: config.connection };
    if (chatId) options.externalRef = chatId;
    if (me) {
      options.customerHint = me.hint; // who the page says is signed in
      options.contextProvider = contextProvider;
    }
    D.load(options);
  }

  function show(me) {
    $("signin").hidden = !!me;
    $("signed-in").hidden = !me;
    $("who").textContent = me ? me.username : "";
  }

  $("signin").addEventListener("submit", async (e) => {
    e.preventDefault();
    const form = new FormData(e.target);
    const r = await fetch("/login", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username: form.get("username"), password: form.get("password") }),
    });
    if (!r.ok) return ($("problem").textContent = "Wrong username or password.");
    const me = await r.json();
    show(me);
    // The anonymous chat becomes the customer's.
    D.setCustomer({ customerHint: me.hint, contextProvider });
  });

  $("signout").addEventListener("click", async () => {
    await fetch("/logout", { method: "POST" });
    D.clear(); // forget the customer's session in this tab
    chatId = null; // the widget's chat was the signed-out customer's
    show(null);
    start(null);
  });

  (async () => {
    config = await (await fetch("/config.json")).json();
    const me = await (await fetch("/me")).json();
    show(me);
    start(me);
  })();
})();
