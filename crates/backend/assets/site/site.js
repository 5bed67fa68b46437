// The demo company site: signs the customer in at /customer_authenticate,
// keeps the JWT in memory only, and hands it to the deskbridge web SDK.
"use strict";

(() => {
  const SIGNED_IN_HINT = "acme.demo.signedIn"; // not a credential: "try /demo/token on reload"
  const $ = (id) => document.getElementById(id);

  const site = {
    config: null,
    sdkReady: null,
    chatLoaded: false,
    username: null,
    jwt: null, // in memory only, never in storage
    expiresIn: null,
    exp: null,
    heldWaiters: [],
  };

  function show(el, visible) {
    el.hidden = !visible;
  }

  function setText(el, text) {
    el.textContent = text || "";
    el.hidden = !text;
  }

  // For display only: the site never trusts what it decodes here.
  function claims(jwt) {
    try {
      const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const json = decodeURIComponent(
        atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "="))
          .split("")
          .map((c) => `%${c.charCodeAt(0).toString(16).padStart(2, "0")}`)
          .join("")
      );
      return JSON.parse(json);
    } catch (e) {
      return {};
    }
  }

  function keep(login) {
    site.jwt = login.JWT;
    site.expiresIn = Number(login.expires_in) || null;
    const c = claims(site.jwt);
    site.exp = Number(c.exp) || (site.expiresIn ? Date.now() / 1000 + site.expiresIn : null);
    site.sub = c.sub || null;
    renderAuth();
    tick();
  }

  function context() {
    return { auth: { token: site.jwt, expiresIn: site.expiresIn } };
  }

  // --- the site's own login ----------------------------------------------------

  async function readError(res) {
    try {
      const body = await res.json();
      return body || {};
    } catch (e) {
      return {};
    }
  }

  async function signIn(e) {
    e.preventDefault();
    const username = $("username").value.trim();
    const password = $("password").value;
    const err = $("signin-error");
    if (!username || !password) return setText(err, "Enter your username and password.");
    const button = $("signin-submit");
    button.disabled = true;
    try {
      const res = await fetch("/customer_authenticate", {
        method: "POST",
        credentials: "same-origin",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ username, password }),
      });
      if (!res.ok) {
        const body = await readError(res);
        if (res.status === 429) setText(err, "Too many attempts. Wait a moment and try again.");
        else if (body.error === "invalid_credentials" || res.status === 401) setText(err, "Wrong username or password.");
        else setText(err, body.error_description || `Sign-in failed (HTTP ${res.status}).`);
        $("password").focus();
        return;
      }
      keep(await res.json());
      $("password").value = "";
      setText(err, "");
      site.username = username;
      sessionStorage.setItem(SIGNED_IN_HINT, username);
      enterSignedIn();
      await startChatSignedIn();
    } catch (x) {
      setText(err, "The site could not be reached.");
    } finally {
      button.disabled = false;
    }
  }

  function enterSignedIn() {
    show($("signed-out"), false);
    show($("signed-in"), true);
    $("welcome").textContent = `Welcome back, ${site.username}`;
    $("header-user").textContent = `Signed in as ${site.username}`;
    show($("header-user"), true);
    $("signout").focus();
  }

  async function signOut() {
    try {
      await fetch("/demo/logout", { method: "POST", credentials: "same-origin" });
    } catch (e) {
      /* signed out here either way */
    }
    forget();
  }

  function forget() {
    sessionStorage.removeItem(SIGNED_IN_HINT);
    site.jwt = null;
    site.exp = null;
    site.sub = null;
    site.username = null;
    releaseHeld();
    forgetTransactions();
    if (window.Deskbridge) window.Deskbridge.clear();
    site.chatLoaded = false;
    show($("signed-in"), false);
    show($("signed-out"), true);
    show($("header-user"), false);
    show($("chat-open-view"), false);
    show($("chat-closed"), true);
    renderRefreshes(0, null);
    $("username").focus();
  }

  // A fresh JWT from the site's own session (the HttpOnly cookie).
  async function freshLogin() {
    const res = await fetch("/demo/token", { method: "POST", credentials: "same-origin" });
    if (!res.ok) {
      const body = await readError(res);
      const error = new Error(body.error || `HTTP ${res.status}`);
      error.status = res.status;
      throw error;
    }
    keep(await res.json());
  }

  // --- the chat -----------------------------------------------------------------------

  function holdReleased() {
    if (!$("hold").checked) return Promise.resolve();
    show($("held-note"), true);
    return new Promise((resolve) => site.heldWaiters.push(resolve));
  }

  function releaseHeld() {
    show($("held-note"), false);
    const waiters = site.heldWaiters.splice(0);
    waiters.forEach((w) => w());
  }

  // What the SDK calls for the customer's login; with needsRefresh, the gateway
  // has asked for a fresh one.
  function contextProvider(callback, needsRefresh) {
    if (!needsRefresh && site.jwt) return callback(context());
    holdReleased()
      .then(() => (site.username ? freshLogin() : Promise.reject(new Error("signed out"))))
      .then(() => callback(context()))
      .catch((e) => {
        if (e.status === 401) {
          forget();
          setText($("chat-error"), "Your session with Acme has ended. Sign in again to reconnect.");
        } else {
          // No fresh login this time: the SDK reports it and asks again later.
          callback(null);
        }
      });
  }

  function loadSdk() {
    if (!site.sdkReady) {
      site.sdkReady = new Promise((resolve, reject) => {
        const s = document.createElement("script");
        s.src = `${site.config.gateway_url.replace(/\/+$/, "")}/sdk/deskbridge.js`;
        s.async = true;
        s.onload = () => {
          window.Deskbridge.on("state", renderState);
          window.Deskbridge.on("refresh", (r) => {
            renderRefreshes(r.count, r.at);
            if (!tx.session && site.username) renderState(window.Deskbridge.getState());
          });
          window.Deskbridge.on("error", (e) => {
            if (e.where !== "events") setText($("chat-error"), `This page could not reach deskbridge (${e.code}).`);
          });
          resolve();
        };
        s.onerror = () => reject(new Error("the chat could not be loaded"));
        document.head.append(s);
      });
    }
    return site.sdkReady;
  }

  function options(withLogin) {
    const o = {
      gateway: site.config.gateway_url,
      appKey: site.config.app_key,
      channel: site.config.channel || "web",
      connection: site.config.connection,
    };
    if (withLogin) o.contextProvider = contextProvider;
    return o;
  }

  function openChatView() {
    show($("chat-closed"), false);
    show($("chat-open-view"), true);
    setText($("chat-error"), "");
  }

  async function openAnonymously() {
    await loadSdk();
    if (site.chatLoaded) return;
    site.chatLoaded = true;
    openChatView();
    window.Deskbridge.load(options(false));
  }

  async function startChatSignedIn() {
    await loadSdk();
    openChatView();
    if (site.chatLoaded) {
      window.Deskbridge.setCustomer({ contextProvider });
    } else {
      site.chatLoaded = true;
      window.Deskbridge.load(options(true));
    }
  }

  // --- the customer's own transactions, through deskbridge ------------------------------
  // The site knows its customer's accounts (/demo/accounts); their
  // transactions come from Deskbridge.run("gettransactions"): the action the
  // agent runs, with the same login, masked for the customer.

  const tx = { accounts: null, session: null, seq: 0 };

  function txStatus(text, state) {
    const el = $("tx-status");
    el.textContent = text || "";
    el.dataset.state = state || "";
  }

  async function siteAccounts() {
    const res = await fetch("/demo/accounts", { method: "POST", credentials: "same-origin" });
    if (!res.ok) throw Object.assign(new Error(`HTTP ${res.status}`), { problem: (await readError(res)).error || `http_${res.status}` });
    return (await res.json()).accounts || [];
  }

  function amountText(m) {
    if (!m || typeof m !== "object") return String(m ?? "—");
    try {
      return new Intl.NumberFormat(undefined, { style: "currency", currency: String(m.currency) }).format(m.amount);
    } catch (e) {
      return `${m.amount} ${m.currency}`;
    }
  }

  function dateText(iso) {
    const at = Date.parse(iso);
    if (Number.isNaN(at)) return String(iso || "—");
    return new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", timeZone: "UTC" }).format(at);
  }

  function renderTransactions(data) {
    const list = Array.isArray(data) ? data : (data && (data.transactions || data.items)) || [];
    const rows = list.map((t) => {
      const out = String(t.amount && t.amount.amount).trim().startsWith("-");
      const tr = document.createElement("tr");
      tr.dataset.testid = "site-tx-row";
      const date = document.createElement("td");
      date.className = "tx-date";
      date.textContent = dateText(t.booked_at);
      const what = document.createElement("td");
      what.textContent = t.description || "—";
      if (t.status === "pending") {
        const tag = document.createElement("span");
        tag.className = "tx-pending";
        tag.textContent = "pending";
        what.append(tag);
      }
      const amount = document.createElement("td");
      amount.className = `num ${out ? "out" : "in"}`;
      amount.textContent = amountText(t.amount);
      tr.append(date, what, amount);
      return tr;
    });
    $("tx-rows").replaceChildren(...rows);
    show(document.querySelector(".tx-table"), rows.length > 0);
    txStatus(rows.length ? "" : "No transactions yet on this account.");
  }

  async function showTransactions() {
    if (!site.username || !site.authenticated || !window.Deskbridge) return;
    const seq = ++tx.seq;
    $("tx-refresh").disabled = true;
    try {
      if (!tx.accounts) {
        tx.accounts = await siteAccounts();
        const picker = $("tx-account");
        picker.replaceChildren(
          ...tx.accounts.map((a) => {
            const o = document.createElement("option");
            o.value = a.id;
            o.textContent = `${a.type ? a.type.replace(/_/g, " ") : "account"} ${a.id}`;
            return o;
          })
        );
        show(picker, tx.accounts.length > 1);
      }
      if (seq !== tx.seq) return;
      if (!tx.accounts.length) return txStatus("You have no accounts yet.");
      txStatus("Loading your transactions…");
      const answer = await window.Deskbridge.run("gettransactions", { account_id: $("tx-account").value || tx.accounts[0].id, limit: 5 });
      if (seq === tx.seq) renderTransactions(answer.data);
    } catch (e) {
      if (seq !== tx.seq) return;
      if (e.problem === "customer_auth_required") {
        tx.session = null; // tried again once the chat has a fresh login
        txStatus("Waiting for deskbridge to renew your login…");
      } else {
        txStatus(`Your transactions could not be loaded (${e.problem || e.message}).`, "error");
      }
    } finally {
      if (seq === tx.seq) $("tx-refresh").disabled = false;
    }
  }

  function forgetTransactions() {
    tx.seq += 1;
    tx.accounts = null;
    tx.session = null;
    $("tx-rows").replaceChildren();
    $("tx-account").replaceChildren();
    show($("tx-account"), false);
    show(document.querySelector(".tx-table"), false);
    $("tx-refresh").disabled = true;
    txStatus("Loaded through deskbridge once it has your login.");
  }

  const STATUS_TEXT = { idle: "Not started", connecting: "Connecting…", connected: "Connected" };

  function renderState(st) {
    const el = $("chat-status");
    el.dataset.status = st.status;
    el.textContent = STATUS_TEXT[st.status] || st.status;
    $("chat-conversation").textContent = st.conversationId || "—";
    site.authenticated = st.authenticated;
    renderAuth();
    // Once per authenticated session: the chat now carries the login.
    if (st.authenticated && site.username && st.sessionId && tx.session !== st.sessionId) {
      tx.session = st.sessionId;
      showTransactions();
    }
  }

  function renderAuth() {
    const el = $("chat-auth");
    if (site.authenticated && site.sub) el.textContent = site.sub;
    else if (site.authenticated) el.textContent = "a signed-in customer";
    else el.textContent = "anonymous";
    el.dataset.authenticated = String(Boolean(site.authenticated));
  }

  function renderRefreshes(count, at) {
    const el = $("chat-refreshes");
    el.dataset.count = String(count);
    const times = count === 1 ? "1 time" : `${count} times`;
    el.textContent = at ? `${times}, last at ${at.toLocaleTimeString()}` : times;
  }

  function tick() {
    const el = $("token-ttl");
    if (!site.exp) return void (el.textContent = "—");
    const left = Math.round(site.exp - Date.now() / 1000);
    el.textContent = left > 0 ? `${left} s` : "expired (renewed when deskbridge asks)";
  }

  // --- start ---------------------------------------------------------------------------

  async function boot() {
    $("signin-form").addEventListener("submit", signIn);
    $("signout").addEventListener("click", signOut);
    $("chat-open").addEventListener("click", openAnonymously);
    $("tx-refresh").addEventListener("click", showTransactions);
    $("tx-account").addEventListener("change", showTransactions);
    $("hold").addEventListener("change", () => {
      if (!$("hold").checked) releaseHeld();
    });
    setInterval(tick, 1000);
    try {
      const res = await fetch("/demo/config.json", { credentials: "same-origin" });
      site.config = await res.json();
    } catch (e) {
      setText($("chat-error"), "deskbridge is not available right now.");
      return;
    }
    $("chat-open").disabled = false;
    $("console-link").href = `${site.config.gateway_url.replace(/\/+$/, "")}/console`;
    loadSdk().catch((e) => setText($("chat-error"), `deskbridge could not be loaded from ${site.config.gateway_url}.`));
    // After a reload: the site session (cookie) may still be there. Only ask
    // when this tab signed in, so a first visit makes no failing request.
    const remembered = sessionStorage.getItem(SIGNED_IN_HINT);
    if (remembered) {
      try {
        await freshLogin();
        site.username = remembered;
        enterSignedIn();
        await startChatSignedIn();
      } catch (e) {
        sessionStorage.removeItem(SIGNED_IN_HINT);
      }
    }
    if (!site.username) $("username").focus();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
  else boot();
})();
