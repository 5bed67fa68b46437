// deskbridge agent console: sign-in, the live conversation list, one
// conversation with its customer card, and the admin view. Plain ES2020, no
// build step; served by the gateway under a strict CSP (no inline code or style).
// The same script is the embeddable customer card (/card, `data-mode="card"`):
// one conversation's card and actions, inside a desk's sidebar, found by the
// desk's own ticket id; see "embedded card mode" below and docs/agent-card.md.
"use strict";

(() => {
  const SIGNED_IN_HINT = "deskbridge.console.signedIn"; // not a credential: only "try /me first"
  const CHANNELS = ["web", "ios", "android"];
  const EVENT_KINDS = ["session_opened", "authenticated", "authentication_required", "external_ref_bound"];
  const CARD = document.body.dataset.mode === "card";

  const S = {
    agent: null,
    csrf: null,
    conversations: [],
    nextCursor: null,
    shown: 50,
    names: new Map(), // customer_id -> name, learnt from getprofile
    route: { view: "list", id: null, query: new URLSearchParams() },
    routed: false,
    current: null, // the open conversation's detail
    detailSeq: 0,
    card: { convId: null, state: "idle", seq: 0, loading: false },
    actions: { convId: null, views: [] }, // the open conversation's action cards
    es: null,
    liveDown: false,
    liveBackoff: 1000,
    liveTimer: null,
    listTimer: null,
    detailTimer: null,
    connectionsLoaded: false,
    token: null, // card mode: the agent token the desk handed over (memory only)
    ref: null, // card mode: the desk's ticket id, and its connection if given
    refConnection: null,
    liveAbort: null,
  };

  const $ = (id) => document.getElementById(id);

  // --- DOM building (never innerHTML with data) ------------------------------

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k === "hidden") el.hidden = true;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function show(el, visible) {
    el.hidden = !visible;
  }

  function setText(el, text) {
    el.textContent = text || "";
    el.hidden = !text;
  }

  // --- formatting ------------------------------------------------------------

  function relative(ts) {
    const secs = Math.round(Date.now() / 1000 - ts);
    if (secs < 45) return "just now";
    if (secs < 90) return "1 min ago";
    if (secs < 3600) return `${Math.round(secs / 60)} min ago`;
    if (secs < 86400) return `${Math.round(secs / 3600)} h ago`;
    if (secs < 172800) return "yesterday";
    if (secs < 7 * 86400) return `${Math.round(secs / 86400)} days ago`;
    return new Intl.DateTimeFormat(undefined, { dateStyle: "medium" }).format(ts * 1000);
  }

  function absolute(ts) {
    return new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" }).format(ts * 1000);
  }

  function timeEl(ts, cls) {
    return h("time", { class: cls || "time", datetime: new Date(ts * 1000).toISOString(), title: absolute(ts), "data-ts": ts }, relative(ts));
  }

  function money(balance) {
    if (!balance || balance.amount === undefined) return "—";
    const amount = String(balance.amount);
    const currency = String(balance.currency || "").toUpperCase();
    try {
      // A decimal string is formatted exactly by current engines; older ones
      // convert it to a number, which is fine for display.
      return new Intl.NumberFormat(undefined, { style: "currency", currency }).format(amount);
    } catch (e) {
      return `${amount} ${currency}`.trim();
    }
  }

  function calendarDate(ymd) {
    const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(String(ymd || ""));
    if (!m) return ymd ? String(ymd) : "—";
    const utc = Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]));
    return new Intl.DateTimeFormat(undefined, { dateStyle: "long", timeZone: "UTC" }).format(utc);
  }

  function words(s) {
    const t = String(s || "").replace(/_/g, " ");
    return t.charAt(0).toUpperCase() + t.slice(1);
  }

  function shortId(id) {
    const s = String(id || "");
    return s.length > 16 ? `${s.slice(0, 12)}…${s.slice(-4)}` : s;
  }

  function initials(name) {
    const parts = String(name || "").trim().split(/\s+/).filter(Boolean);
    if (!parts.length) return "?";
    return (parts[0][0] + (parts.length > 1 ? parts[parts.length - 1][0] : "")).toUpperCase();
  }

  function hue(s) {
    let n = 0;
    for (const ch of String(s || "")) n = (n * 31 + ch.charCodeAt(0)) >>> 0;
    return `avatar-c${n % 6}`;
  }

  function customerLabel(c) {
    if (!c.customer_id) return "Anonymous visitor";
    return S.names.get(c.customer_id) || shortId(c.customer_id);
  }

  function channelBadge(ch) {
    const known = CHANNELS.includes(ch) ? ch : "other";
    const label = { web: "Web", ios: "iOS", android: "Android" }[ch] || ch;
    return h("span", { class: `badge channel channel-${known}`, "data-testid": "channel-badge", "data-channel": ch }, label);
  }

  function authPill(c) {
    const state = c.auth_state || "none";
    let label = { valid: "signed in", expired: "login expired", none: "anonymous" }[state] || state;
    if (state === "none" && c.customer_id) label = "no login";
    return h("span", { class: `pill auth-${state}`, "data-testid": "auth-pill", "data-auth-state": state }, label);
  }

  // --- HTTP --------------------------------------------------------------------

  class Problem extends Error {
    constructor(status, body, headers) {
      const slug = body && typeof body.type === "string" ? body.type.split(":").pop() : status ? `http_${status}` : "network";
      super((body && (body.detail || body.title)) || slug);
      this.status = status;
      this.slug = slug;
      this.detail = body && body.detail ? String(body.detail) : "";
      this.backendStatus = body ? body.backend_status : undefined;
      this.backendError = body ? body.backend_error : undefined;
      // On invalid_action_input: one `{field, reason}` per field that is wrong.
      this.errors = body && Array.isArray(body.errors) ? body.errors : [];
      this.retryAfter = headers ? Number(headers.get("retry-after")) || 0 : 0;
      // The request's trace, for an operator to find it in the logs and the audit log.
      this.traceId = headers ? headers.get("x-trace-id") || "" : "";
    }
  }

  async function api(path, opts = {}) {
    const method = opts.method || "GET";
    const headers = { accept: "application/json", ...(opts.headers || {}) };
    if (S.token) headers.authorization = `Bearer ${S.token}`;
    else if (method !== "GET" && S.csrf) headers["x-csrf-token"] = S.csrf;
    if (opts.body !== undefined) headers["content-type"] = "application/json";
    let res;
    try {
      res = await fetch(path, {
        method,
        headers,
        body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
        credentials: "same-origin",
        cache: "no-store",
      });
    } catch (e) {
      throw new Problem(0, null, null);
    }
    if (res.status === 204) return null;
    const text = await res.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch (e) {
      json = null;
    }
    if (res.ok) return json;
    const problem = new Problem(res.status, json, res.headers);
    if (problem.slug === "csrf_token_invalid" && !opts.retried) {
      // The CSRF token changed (another tab signed in again): fetch it, retry once.
      const me = await api("/console/api/me", { quiet: true });
      S.csrf = me.csrf_token;
      return api(path, { ...opts, retried: true });
    }
    if (problem.slug === "rate_limited" && !opts.retried) {
      // A burst of events outran the agent's request rate: wait as told (a
      // few seconds at most), then try once more.
      const wait = Math.min(5, Number(res.headers.get("retry-after")) || 1);
      await new Promise((resolve) => setTimeout(resolve, wait * 1000));
      return api(path, { ...opts, retried: true });
    }
    if (res.status === 401 && !opts.quiet) signedOut("Your session has ended. Sign in again.");
    throw problem;
  }

  // What each problem means, in words, as the gateway says (GET
  // /v1/problem-types): the console keeps no copy of its own.
  const hints = new Map();
  async function loadProblemTypes() {
    try {
      const res = await fetch("/v1/problem-types", { headers: { accept: "application/json" } });
      if (!res.ok) return;
      for (const t of (await res.json()).problem_types) hints.set(t.slug, t.hint);
    } catch (e) {
      /* the generic sentence below stands in */
    }
  }
  loadProblemTypes();

  // A sentence an agent can act on, never the JSON.
  function sentence(p) {
    if (p.slug === "network") return "The gateway could not be reached. Check your connection and try again.";
    if (p.slug === "backend_error" && p.backendStatus) {
      const code = p.backendError ? ` (${String(p.backendError).replace(/_/g, " ")})` : "";
      return `The company's API refused the request: it answered HTTP ${p.backendStatus}${code}.`;
    }
    if (hints.has(p.slug)) return hints.get(p.slug);
    return p.status ? `The request failed (HTTP ${p.status}).` : "The request failed.";
  }

  let toastTimer = null;
  function toast(message) {
    const el = $("toast");
    el.textContent = message;
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => {
      el.hidden = true;
    }, 4000);
  }

  // --- sign-in -------------------------------------------------------------------

  let tokenMode = false;

  function showSignin(message) {
    $("boot").hidden = true;
    $("app").hidden = true;
    $("signin").hidden = false;
    setText($("signin-error"), message || "");
    $("signin-error").classList.toggle("info", Boolean(message));
    (tokenMode ? $("signin-token") : $("signin-username")).focus();
  }

  function setTokenMode(on) {
    tokenMode = on;
    show($("signin-password-fields"), !on);
    show($("signin-token-fields"), on);
    $("signin-mode").textContent = on ? "Use a username and password instead" : "Use an agent token instead";
    setText($("signin-error"), "");
    (on ? $("signin-token") : $("signin-username")).focus();
  }

  async function submitSignin(e) {
    e.preventDefault();
    const err = $("signin-error");
    err.classList.remove("info");
    let body;
    if (tokenMode) {
      const token = $("signin-token").value.trim();
      if (!token) return setText(err, "Enter your agent token.");
      body = { token };
    } else {
      const username = $("signin-username").value.trim();
      const password = $("signin-password").value;
      if (!username || !password) return setText(err, "Enter your username and password.");
      body = { username, password };
    }
    const button = $("signin-submit");
    button.disabled = true;
    button.textContent = "Signing in…";
    try {
      const me = await api("/console/api/login", { method: "POST", body, quiet: true });
      $("signin-password").value = "";
      $("signin-token").value = "";
      setText(err, "");
      enter(me);
    } catch (p) {
      if (p.slug === "invalid_credentials" || p.status === 401) {
        setText(err, tokenMode ? "That agent token is not valid." : "Wrong username or password.");
      } else if (p.slug === "too_many_attempts" || p.status === 429) {
        const secs = p.retryAfter;
        const when = secs >= 120 ? `${Math.ceil(secs / 60)} minutes` : `${secs} seconds`;
        const wait = secs ? ` Try again in ${when}.` : " Try again later.";
        setText(err, `Too many sign-in attempts.${wait}`);
      } else if (p.slug === "invalid_request") {
        setText(err, tokenMode ? "Enter your agent token." : "Enter your username and password.");
      } else {
        setText(err, sentence(p));
      }
      (tokenMode ? $("signin-token") : $("signin-password")).focus();
    } finally {
      button.disabled = false;
      button.textContent = "Sign in";
    }
  }

  function enter(me) {
    S.agent = me.agent;
    S.csrf = me.csrf_token;
    try {
      localStorage.setItem(SIGNED_IN_HINT, "1");
    } catch (e) {
      /* private mode: the hint only saves a request */
    }
    $("boot").hidden = true;
    $("signin").hidden = true;
    $("app").hidden = false;
    $("agent-name").textContent = S.agent.name;
    $("agent-role").textContent = S.agent.role;
    $("agent-role").dataset.role = S.agent.role;
    show($("nav-admin"), S.agent.role === "admin");
    startLive();
    S.routed = false;
    route();
    refreshList();
  }

  function signedOut(message) {
    if (CARD) return cardSignedOut(message);
    stopLive();
    S.agent = null;
    S.csrf = null;
    S.current = null;
    S.conversations = [];
    S.names.clear();
    S.connectionsLoaded = false;
    S.card = { convId: null, state: "idle", seq: S.card.seq + 1, loading: false };
    S.actions = { convId: null, views: [] };
    actionLists.clear();
    $("conversation-list").replaceChildren();
    $("detail-body").replaceChildren();
    $("connections").replaceChildren();
    $("audit-rows").replaceChildren();
    try {
      localStorage.removeItem(SIGNED_IN_HINT);
    } catch (e) {
      /* nothing stored */
    }
    showSignin(message);
  }

  async function signOut() {
    stopLive();
    let provider = null;
    try {
      provider = await api("/console/api/logout", { method: "POST", quiet: true });
    } catch (e) {
      /* signed out on this side either way */
    }
    signedOut("You have signed out.");
    // Signed in at the company's identity provider: end that session too;
    // the provider sends the browser back to the console.
    if (provider && provider.provider_logout_url) location.assign(provider.provider_logout_url);
  }

  // How agents sign in here: a password form, the company's identity
  // provider, or both (GET /console/api/sign-in).
  async function loadSignInOptions() {
    let options;
    try {
      options = await api("/console/api/sign-in", { quiet: true });
    } catch (e) {
      return;
    }
    const provider = options && options.provider;
    if (provider) {
      $("signin-provider-button").textContent = `Sign in with ${provider.name}`;
      $("signin-provider-button").setAttribute("href", provider.url);
    }
    show($("signin-provider"), Boolean(provider));
    if (options && options.passwords === false) {
      // Only the provider (or an agent token) signs agents in.
      setTokenMode(true);
      $("signin-mode").hidden = true;
      if (!$("app").hidden) return;
      $("signin-provider-button").focus();
    }
  }

  // --- live events ---------------------------------------------------------------

  function setLive(state) {
    const el = $("live");
    el.dataset.state = state;
    el.textContent = { live: "Live", connecting: "Connecting…", reconnecting: "Reconnecting…", down: "Offline" }[state];
  }

  function stopLive() {
    if (S.es) S.es.close();
    S.es = null;
    if (S.liveAbort) S.liveAbort.abort();
    S.liveAbort = null;
    clearTimeout(S.liveTimer);
  }

  function startLive() {
    stopLive();
    setLive(S.liveDown ? "reconnecting" : "connecting");
    if (S.token) return startTokenLive();
    const es = new EventSource("/v1/events");
    S.es = es;
    es.onopen = () => {
      if (S.es !== es) return;
      setLive("live");
      S.liveBackoff = 1000;
      if (S.liveDown) {
        // Events are not replayed: catch up on what happened meanwhile.
        S.liveDown = false;
        refreshList();
        if (S.current) scheduleDetail();
      }
    };
    es.onerror = () => {
      if (S.es !== es) return;
      S.liveDown = true;
      if (es.readyState !== EventSource.CLOSED) {
        setLive("reconnecting");
        return;
      }
      es.close();
      S.es = null;
      setLive("down");
      // Refused outright: signed out, or the gateway restarted. Ask which.
      clearTimeout(S.liveTimer);
      S.liveTimer = setTimeout(async () => {
        try {
          const me = await api("/console/api/me", { quiet: true });
          S.csrf = me.csrf_token;
          startLive();
        } catch (p) {
          if (p.status === 401) signedOut("Your session has ended. Sign in again.");
          else {
            S.liveBackoff = Math.min(S.liveBackoff * 2, 30000);
            es.onerror();
          }
        }
      }, S.liveBackoff);
    };
    for (const kind of EVENT_KINDS) es.addEventListener(kind, (m) => onGatewayEvent(kind, m.data));
    es.onmessage = (m) => onGatewayEvent("message", m.data);
  }

  function onGatewayEvent(name, data) {
    let ev;
    try {
      ev = JSON.parse(data);
    } catch (e) {
      return;
    }
    const kind = ev.kind || name;
    // A card whose ticket names no conversation yet, or whose ref may have
    // moved, looks it up again.
    if (CARD && (!S.current || kind === "external_ref_bound")) return scheduleLookup();
    scheduleList();
    if (S.route.view !== "conversation" || !S.current) return;
    if (ev.conversation_id === S.current.id) {
      onCurrentEvent(kind);
    } else if (ev.session_id && S.current.sessions.some((s) => s.id === ev.session_id)) {
      // A session of this (anonymous) conversation signed in: the conversation
      // was folded into the customer's. Follow it.
      if (CARD) return scheduleLookup();
      location.replace(`#/c/${encodeURIComponent(ev.conversation_id)}`);
    }
  }

  function onCurrentEvent(kind) {
    if (kind === "authentication_required") {
      invalidateCard();
      setCard("waiting");
    }
    scheduleDetail(kind === "authenticated");
  }

  // --- conversation list ------------------------------------------------------------

  function scheduleList() {
    clearTimeout(S.listTimer);
    S.listTimer = setTimeout(refreshList, 120);
  }

  let listSeq = 0;
  async function refreshList() {
    if (!S.agent || CARD) return;
    const seq = ++listSeq;
    const limit = Math.min(200, Math.max(50, S.shown));
    try {
      const r = await api(`/v1/conversations?limit=${limit}`);
      if (seq !== listSeq) return;
      S.conversations = r.conversations || [];
      S.nextCursor = r.next_cursor || null;
      setText($("list-error"), "");
      renderList();
    } catch (p) {
      if (seq === listSeq && p.status !== 401) setText($("list-error"), `The conversation list could not be loaded. ${sentence(p)}`);
    }
  }

  async function loadMore() {
    if (!S.nextCursor) return;
    try {
      const r = await api(`/v1/conversations?limit=50&cursor=${encodeURIComponent(S.nextCursor)}`);
      const seen = new Set(S.conversations.map((c) => c.id));
      S.conversations = S.conversations.concat((r.conversations || []).filter((c) => !seen.has(c.id)));
      S.nextCursor = r.next_cursor || null;
      S.shown = S.conversations.length;
      renderList();
    } catch (p) {
      if (p.status !== 401) setText($("list-error"), sentence(p));
    }
  }

  function listItemContent(c) {
    const label = customerLabel(c);
    return [
      h("span", { class: `avatar ${c.customer_id ? hue(c.customer_id) : "avatar-anon"}`, "aria-hidden": "true" }, c.customer_id ? initials(S.names.get(c.customer_id) || "") : "?"),
      h(
        "span",
        { class: "conv-main" },
        h("span", { class: "conv-top" }, h("span", { class: "conv-name", "data-testid": "conversation-name" }, label), timeEl(c.last_activity_at, "conv-time")),
        h("span", { class: "conv-bottom" }, (c.channels || []).map(channelBadge), authPill(c))
      ),
    ];
  }

  function renderList() {
    if (CARD) return;
    const ul = $("conversation-list");
    const existing = new Map([...ul.children].map((li) => [li.dataset.conversationId, li]));
    S.conversations.forEach((c, i) => {
      let li = existing.get(c.id);
      existing.delete(c.id);
      if (!li) {
        li = h("li", { class: "conv", "data-testid": "conversation-item", "data-conversation-id": c.id }, h("a", { class: "conv-link", href: `#/c/${encodeURIComponent(c.id)}` }));
      }
      li.dataset.authState = c.auth_state;
      li.dataset.channels = (c.channels || []).join(",");
      const a = li.firstElementChild;
      a.replaceChildren(...listItemContent(c));
      a.setAttribute("aria-label", `${customerLabel(c)}, ${(c.channels || []).join(" and ")}, ${authPill(c).textContent}, ${relative(c.last_activity_at)}`);
      if (c.id === S.route.id) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
      // Move only what changed place, so a focused link keeps its focus.
      if (ul.children[i] !== li) ul.insertBefore(li, ul.children[i] || null);
    });
    for (const li of existing.values()) li.remove();
    show($("list-empty"), S.conversations.length === 0);
    show($("list-more"), Boolean(S.nextCursor));
  }

  // --- one conversation ----------------------------------------------------------------

  function scheduleDetail(authenticatedEvent) {
    S.pendingAuthenticated = S.pendingAuthenticated || Boolean(authenticatedEvent);
    clearTimeout(S.detailTimer);
    S.detailTimer = setTimeout(() => {
      const forced = S.pendingAuthenticated;
      S.pendingAuthenticated = false;
      if (S.current) loadDetail(S.current.id, forced);
    }, 100);
  }

  function invalidateCard() {
    S.card.seq += 1;
    S.card.loading = false;
  }

  async function openConversation(id) {
    if (!S.current || S.current.id !== id) {
      S.current = null;
      S.card = { convId: id, state: "idle", seq: S.card.seq + 1, loading: false };
      S.actions = { convId: null, views: [] };
      buildDetailSkeleton(id);
    }
    await loadDetail(id, false);
  }

  async function loadDetail(id, authenticatedEvent) {
    const seq = ++S.detailSeq;
    let d;
    try {
      d = await api(`/v1/conversations/${encodeURIComponent(id)}`);
    } catch (p) {
      if (seq !== S.detailSeq || S.route.id !== id) return;
      if (p.status === 401) return;
      S.current = null;
      renderDetailProblem(p);
      return;
    }
    if (seq !== S.detailSeq || S.route.id !== id) return;
    S.current = d;
    renderDetailHead(d);
    renderTimeline(d);
    decideCard(d, authenticatedEvent);
    ensureActions(d);
  }

  // What the customer card should do, given the conversation's auth state.
  function decideCard(d, authenticatedEvent) {
    const st = S.card.state;
    if (!d.customer_id) {
      if (st !== "anonymous") setCard("anonymous");
      return;
    }
    const fresh = st === "idle" || st === "anonymous";
    if (d.auth_state !== "valid" && !(authenticatedEvent && st === "waiting")) {
      if (fresh || st === "ready" || (st === "loading" && !S.card.loading)) setCard("waiting");
      return;
    }
    if (fresh || st === "waiting") loadProfile();
  }

  async function loadProfile() {
    const id = S.current && S.current.id;
    if (!id || (S.card.loading && S.card.convId === id)) return;
    const seq = ++S.card.seq;
    S.card.loading = true;
    setCard("loading");
    try {
      const action = await profileAction(S.current);
      if (seq !== S.card.seq) return;
      if (!action) {
        setCard("none");
        return;
      }
      const r = await api(`/v1/conversations/${encodeURIComponent(id)}/actions/${encodeURIComponent(action.name)}`, { method: "POST" });
      if (seq !== S.card.seq) return;
      const p = (r && r.data) || {};
      if (S.current && S.current.customer_id && p.name) {
        S.names.set(S.current.customer_id, String(p.name));
        renderList();
        renderDetailHead(S.current);
      }
      S.card.profile = p;
      setCard("ready", { profile: p, meta: (r && r.meta) || {}, action });
      loadActionCards();
    } catch (p) {
      if (seq !== S.card.seq) return;
      if (p.slug === "customer_auth_required") setCard("waiting");
      else if (p.status !== 401) setCard("error", { problem: p });
    } finally {
      if (seq === S.card.seq) S.card.loading = false;
    }
  }

  function buildDetailSkeleton(id) {
    const body = $("detail-body");
    body.replaceChildren(
      h("div", { id: "detail-head", class: "detail-head" }, CARD ? null : h("a", { class: "back-link", href: "#/" }, "← Conversations"), h("h2", { id: "detail-heading", tabindex: "-1", "data-testid": "detail-title" }, "Loading…")),
      h(
        "div",
        { class: "detail-grid" },
        h(
          "section",
          { id: "customer-card", class: "card customer-card", "data-testid": "customer-card", "data-state": "idle", "aria-labelledby": "customer-card-title" },
          h("div", { class: "card-head" }, h("h3", { id: "customer-card-title" }, "Customer"), h("span", { id: "card-tools", class: "card-tools" })),
          h("div", { id: "card-status", class: "card-status", "aria-live": "polite", "data-testid": "card-status" }),
          h("div", { id: "card-body", class: "card-body" })
        ),
        h(
          "section",
          { class: "card", "aria-labelledby": "timeline-title" },
          h("div", { class: "card-head" }, h("h3", { id: "timeline-title" }, "Sessions and timeline")),
          h("ul", { id: "sessions", class: "sessions", "data-testid": "sessions", "aria-label": "Sessions" }),
          h("ol", { id: "timeline", class: "timeline", "data-testid": "timeline", "aria-label": "Timeline, newest first" })
        )
      ),
      h("section", { id: "actions", class: "actions-list", "data-testid": "actions", "aria-label": "Actions" })
    );
    $("detail-placeholder").hidden = true;
    body.hidden = false;
  }

  function renderDetailProblem(p) {
    const body = $("detail-body");
    const text = p.slug === "not_found" ? "This conversation no longer exists. When an anonymous visitor signs in, their chat joins the customer's conversation." : sentence(p);
    body.replaceChildren(
      h("div", { class: "detail-head" }, h("a", { class: "back-link", href: "#/" }, "← Conversations"), h("h2", { id: "detail-heading", tabindex: "-1" }, "Conversation unavailable")),
      h("p", { class: "notice", role: "alert", "data-testid": "detail-error" }, text)
    );
  }

  function renderDetailHead(d) {
    const head = $("detail-head");
    if (!head) return;
    const heading = $("detail-heading");
    heading.textContent = customerLabel(d);
    const admin = !CARD && S.agent && S.agent.role === "admin";
    const refs = (d.external_refs || []).map((r) => r.external_ref);
    // replaceChildren would write a null as the text "null": left out instead.
    const parts = [
      CARD ? null : h("a", { class: "back-link", href: "#/" }, "← Conversations"),
      h("div", { class: "detail-title-row" }, heading, authPill(d)),
      h(
        "dl",
        { class: "meta" },
        h("div", {}, h("dt", {}, "Conversation"), h("dd", {}, h("code", { "data-testid": "detail-conversation-id", title: d.id }, d.id))),
        d.customer_id ? h("div", {}, h("dt", {}, "Customer ID"), h("dd", {}, h("code", { title: d.customer_id }, shortId(d.customer_id)))) : null,
        h("div", {}, h("dt", {}, "Connection"), h("dd", {}, d.connection)),
        h("div", {}, h("dt", {}, "Started"), h("dd", {}, timeEl(d.created_at))),
        h("div", {}, h("dt", {}, "Channels"), h("dd", { class: "badges" }, (d.channels || []).map(channelBadge))),
        refs.length ? h("div", {}, h("dt", {}, "Desk refs"), h("dd", { "data-testid": "detail-external-refs" }, refs.join(", "))) : null
      ),
      admin ? h("a", { class: "subtle-link", href: `#/admin?conversation=${encodeURIComponent(d.id)}`, "data-testid": "detail-audit-link" }, "Audit log for this conversation") : null,
    ];
    head.replaceChildren(...parts.filter(Boolean));
  }

  function renderTimeline(d) {
    const byId = new Map((d.sessions || []).map((s) => [s.id, s]));
    $("sessions").replaceChildren(
      ...(d.sessions || []).map((s) =>
        h(
          "li",
          { class: "session", "data-testid": "session-item", "data-channel": s.channel, "data-authenticated": String(Boolean(s.authenticated)) },
          channelBadge(s.channel),
          h("span", { class: "session-state" }, s.authenticated ? "signed in" : "anonymous"),
          h("span", { class: "session-time" }, "opened ", timeEl(s.created_at))
        )
      )
    );
    const events = d.events || [];
    const items = events.map((ev, i) => {
      const session = ev.session_id ? byId.get(ev.session_id) : null;
      const channel = session ? session.channel : null;
      let text;
      if (ev.kind === "session_opened") text = "Opened a chat";
      else if (ev.kind === "authenticated") {
        const earlier = events.slice(i + 1).some((e) => e.kind === "authenticated" || e.kind === "authentication_required");
        text = earlier ? "Login refreshed" : "Signed in";
      } else if (ev.kind === "authentication_required") text = "Login expired: asked the customer's app for a fresh one";
      else if (ev.kind === "external_ref_bound") text = "Linked to a desk conversation";
      else text = words(ev.kind);
      return h(
        "li",
        { class: `event kind-${ev.kind}`, "data-testid": "timeline-item", "data-kind": ev.kind },
        h("span", { class: "dot", "aria-hidden": "true" }),
        h("span", { class: "event-text" }, text, channel ? [" on ", channelBadge(channel)] : null),
        timeEl(ev.at, "event-time")
      );
    });
    if (!items.length) items.push(h("li", { class: "empty" }, "Nothing has happened yet."));
    $("timeline").replaceChildren(...items);
  }

  // --- the customer card ------------------------------------------------------------------

  function setCard(state, data) {
    S.card.state = state;
    if (CARD) tellCardState(state, data);
    const card = $("customer-card");
    if (!card) return;
    card.dataset.state = state;
    const status = $("card-status");
    const body = $("card-body");
    const tools = $("card-tools");
    tools.replaceChildren();
    if (state === "loading") {
      status.replaceChildren(h("p", { class: "loading" }, h("span", { class: "spinner", "aria-hidden": "true" }), "Loading the customer's profile…"));
      body.replaceChildren();
    } else if (state === "waiting") {
      status.replaceChildren(
        h(
          "div",
          { class: "waiting", "data-testid": "card-waiting" },
          h("span", { class: "spinner", "aria-hidden": "true" }),
          h("div", {}, h("p", { class: "waiting-title" }, "Waiting for the customer's app to refresh the login…"), h("p", { class: "muted" }, "Their login has expired. This card reloads by itself as soon as their app sends a fresh one; you don't need to do anything."))
        )
      );
      body.replaceChildren();
      tools.append(h("button", { class: "button ghost small", type: "button", "data-testid": "card-retry", onclick: () => loadProfile() }, "Try now"));
    } else if (state === "anonymous") {
      status.replaceChildren(h("p", { class: "muted", "data-testid": "card-anonymous" }, "This visitor has not signed in. Their profile appears here as soon as they sign in on the company's site or app."));
      body.replaceChildren();
    } else if (state === "error") {
      const p = data.problem;
      status.replaceChildren(
        h(
          "div",
          { class: "card-error", role: "alert", "data-testid": "card-error" },
          h("p", {}, sentence(p)),
          p.detail && p.slug !== "network" ? h("p", { class: "muted small" }, `Details: ${p.detail}`) : null,
          p.traceId ? h("p", { class: "muted small", "data-testid": "card-trace" }, "Trace ", h("code", {}, p.traceId), ": quote it when you report this.") : null
        )
      );
      body.replaceChildren();
      tools.append(h("button", { class: "button ghost small", type: "button", "data-testid": "card-retry", onclick: () => loadProfile() }, "Try again"));
    } else if (state === "none") {
      status.replaceChildren(h("p", { class: "muted", "data-testid": "card-none" }, "No action of this connection heads the conversation: its actions are below."));
      body.replaceChildren();
    } else if (state === "ready") {
      status.replaceChildren();
      body.replaceChildren(...profileView(data.profile, data.meta, answerContext(data.action, {}, data.meta)));
      tools.append(h("button", { class: "button ghost small", type: "button", "data-testid": "card-refresh", onclick: () => loadProfile() }, "Refresh"));
    } else {
      status.replaceChildren();
      body.replaceChildren();
    }
  }

  function profileView(p, meta, ctx) {
    const name = p.name ? String(p.name) : customerLabel(S.current || {});
    const accounts = Array.isArray(p.accounts) ? p.accounts : [];
    const since = p.member_since ? calendarDate(p.member_since) : null;
    const out = [
      h(
        "div",
        { class: "profile-head" },
        h("span", { class: `avatar large ${hue(S.current && S.current.customer_id)}`, "aria-hidden": "true" }, initials(name)),
        h(
          "div",
          {},
          h("p", { class: "profile-name", "data-testid": "customer-name" }, name),
          h(
            "p",
            { class: "profile-sub" },
            p.tier ? h("span", { class: `tier tier-${String(p.tier).toLowerCase().replace(/[^a-z]/g, "")}`, "data-testid": "customer-tier" }, words(p.tier)) : null,
            since ? h("span", { class: "since" }, "Member since ", h("span", { "data-testid": "customer-member-since" }, since)) : null
          )
        )
      ),
    ];
    const contact = [];
    if (p.email) contact.push(h("div", {}, h("dt", {}, "Email"), h("dd", {}, leaf(ctx, "/email", p.email))));
    if (p.phone) contact.push(h("div", {}, h("dt", {}, "Phone"), h("dd", {}, leaf(ctx, "/phone", p.phone))));
    if (contact.length) out.push(h("dl", { class: "contact" }, contact));
    if (accounts.length) {
      out.push(
        h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { class: "table accounts", "data-testid": "accounts" },
            h("caption", {}, "Accounts"),
            h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Account"), h("th", { scope: "col" }, "Status"), h("th", { scope: "col", class: "num" }, "Balance"))),
            h(
              "tbody",
              {},
              accounts.map((a, i) => {
                const negative = a.balance && String(a.balance.amount).trim().startsWith("-");
                return h(
                  "tr",
                  { "data-testid": "account-row", "data-account-id": a.id },
                  h("td", {}, h("span", { class: "account-type" }, words(a.type)), h("code", { class: "account-id" }, a.id === undefined ? "—" : leaf(ctx, `/accounts/${i}/id`, a.id))),
                  h("td", {}, h("span", { class: `status status-${String(a.status || "").toLowerCase()}` }, words(a.status || "unknown"))),
                  h("td", { class: `num${negative ? " negative" : ""}`, "data-testid": "account-balance" }, money(a.balance))
                );
              })
            )
          )
        )
      );
    } else {
      out.push(h("p", { class: "muted" }, "No accounts."));
    }
    // What else the answer holds (cards, say), shown as any answer is.
    const shown = new Set(["customer_id", "name", "tier", "member_since", "email", "phone", "accounts"]);
    const rest = Object.fromEntries(Object.entries(p).filter(([k]) => !shown.has(k)));
    if (Object.keys(rest).length) out.push(h("div", { class: "profile-more" }, answerView(ctx, rest)));
    const bits = [`From the company's ${ctx.action.name} API`];
    if (meta && Number.isFinite(meta.latency_ms)) bits.push(`${meta.latency_ms} ms`);
    if (meta && meta.cached) bits.push("cached");
    out.push(h("p", { class: "card-foot muted small", "data-testid": "card-meta" }, bits.join(" · ")));
    return out;
  }

  // --- the connection's actions ---------------------------------------------------------------
  // Every action of the conversation's connection, from GET
  // /v1/connections/{name}/actions: the profile action heads the conversation
  // (the customer card above); a read without required input loads as a card;
  // a read with inputs is a form; a write is a button that opens its form and
  // asks for confirmation, showing exactly what will be sent.

  const actionLists = new Map(); // connection -> Promise of its action list

  function actionsOf(connection) {
    if (!actionLists.has(connection)) {
      const list = api(`/v1/connections/${encodeURIComponent(connection)}/actions`).catch((p) => {
        actionLists.delete(connection); // asked again next time
        throw p;
      });
      actionLists.set(connection, list);
    }
    return actionLists.get(connection);
  }

  // The action whose answer heads the conversation; getprofile when the list
  // cannot be had (the console of old did no more).
  async function profileAction(d) {
    try {
      const list = await actionsOf(d.connection);
      return (list.actions || []).find((a) => a.name === list.profile_action) || null;
    } catch (p) {
      if (p.status === 401) throw p;
      return { name: "getprofile", kind: "read", may_reveal: false, input: null };
    }
  }

  function fieldsOf(action) {
    const schema = action.input || {};
    const required = new Set(Array.isArray(schema.required) ? schema.required : []);
    return Object.entries(schema.properties || {}).map(([name, spec]) => ({ name, spec: spec || {}, required: required.has(name) }));
  }

  function actionTitle(a) {
    return a.description ? String(a.description).replace(/\.$/, "") : words(a.name);
  }

  // Builds the action cards once per conversation; a reload of the
  // conversation (events) leaves forms and answers as they are.
  async function ensureActions(d) {
    if (S.actions.convId === d.id) return;
    S.actions = { convId: d.id, views: [] };
    const host = $("actions");
    if (!host) return;
    let list;
    try {
      list = await actionsOf(d.connection);
    } catch (p) {
      if (S.actions.convId !== d.id || p.status === 401) return;
      host.replaceChildren(h("p", { class: "inline-error", role: "alert", "data-testid": "actions-error" }, `The actions of ${d.connection} could not be loaded. ${sentence(p)}`));
      S.actions.convId = null; // try again with the next reload
      return;
    }
    if (S.actions.convId !== d.id) return;
    const others = (list.actions || []).filter((a) => a.name !== list.profile_action);
    S.actions.views = others.map((a) => actionCard(a));
    host.replaceChildren(
      ...(others.length
        ? [h("h3", { class: "section-title" }, "Actions", h("span", { class: "muted section-sub" }, ` · ${d.connection}`)), ...S.actions.views.map((v) => v.el)]
        : [])
    );
    if (S.card.state === "ready") loadActionCards();
  }

  // The reads that need no input load with the customer card.
  function loadActionCards() {
    fillSuggestions();
    for (const v of S.actions.views || []) if (v.autoload) v.run();
  }

  function actionCard(a) {
    const id = `action-${a.name}`;
    const fields = fieldsOf(a);
    const write = a.kind === "write";
    const autoload = !write && fields.every((f) => !f.required);
    const result = h("div", { class: "action-result", "data-testid": "action-result", "aria-live": "polite" });
    const tools = h("span", { class: "card-tools" });
    const el = h(
      "section",
      { class: `card action-card kind-${write ? "write" : "read"}`, "data-testid": "action-card", "data-action": a.name, "data-kind": a.kind, "aria-labelledby": `${id}-title` },
      h(
        "div",
        { class: "card-head" },
        h(
          "div",
          { class: "action-heading" },
          h("h3", { id: `${id}-title` }, actionTitle(a)),
          h("span", { class: "action-sub" }, h("code", {}, a.name), h("span", { class: `kind-badge kind-${write ? "write" : "read"}`, "data-testid": "action-kind" }, write ? "write" : "read"))
        ),
        tools
      )
    );
    const view = { action: a, el, autoload, run: () => {} };

    if (!a.may_run) {
      const who = a.roles && a.roles.length ? `It needs the role ${a.roles.join(" or ")}.` : "It is not for agents.";
      el.append(h("p", { class: "muted", "data-testid": "action-not-allowed" }, `Your role (${S.agent.role}) may not run this action. ${who}`));
      return view;
    }

    const form = fields.length ? actionForm(a, fields) : null;
    const runRead = async (input) => {
      const convId = S.current && S.current.id;
      if (!convId) return;
      const seq = (view.seq = (view.seq || 0) + 1);
      result.replaceChildren(h("p", { class: "loading" }, h("span", { class: "spinner", "aria-hidden": "true" }), "Asking the company…"));
      if (form) form.busy(true);
      try {
        const r = await runAction(convId, a.name, input);
        if (seq !== view.seq) return;
        showAnswer(result, answerContext(a, input, r.meta), r, form);
      } catch (p) {
        if (seq !== view.seq) return;
        if (p.status === 401) return;
        result.replaceChildren();
        if (form && p.slug === "invalid_action_input") form.showErrors(p.errors);
        else result.append(problemView(p));
      } finally {
        if (seq === view.seq && form) form.busy(false);
      }
    };

    if (write) {
      const open = h("button", { class: "button danger-outline", type: "button", "data-testid": "write-open", "aria-expanded": "false", "aria-controls": `${id}-form` }, `Run ${a.name}…`);
      const formWrap = h("div", { id: `${id}-form`, class: "write-form", hidden: true });
      open.addEventListener("click", () => {
        const opening = formWrap.hidden;
        formWrap.hidden = !opening;
        open.setAttribute("aria-expanded", String(opening));
        if (opening && form) form.focus();
      });
      el.append(h("p", { class: "muted action-lead" }, "A write: it changes the customer's data at the company, once you confirm."));
      el.append(h("div", { class: "action-buttons" }, open), formWrap);
      const review = (input) =>
        confirmWrite(
          a,
          input,
          (r, ctx) => {
            formWrap.hidden = true;
            open.setAttribute("aria-expanded", "false");
            showAnswer(result, ctx, r, form);
            // The change shows in the customer card too (a blocked card, say).
            if (S.card.state === "ready") loadProfile();
          },
          form
        );
      if (form) {
        form.onSubmit(review, "Review…", "write-review");
        formWrap.append(form.el);
      } else {
        formWrap.append(h("div", { class: "form-actions" }, h("button", { class: "button primary", type: "button", "data-testid": "write-review", onclick: () => review({}) }, "Review…")));
      }
      el.append(result);
      return view;
    }

    if (form) {
      form.onSubmit(runRead, autoload ? "Run again" : "Run", "action-run");
      el.append(form.el);
    } else {
      tools.append(h("button", { class: "button ghost small", type: "button", "data-testid": "action-refresh", onclick: () => runRead({}) }, "Refresh"));
    }
    el.append(result);
    if (autoload) {
      view.run = () => (form ? form.submit() : runRead({}));
      if (S.card.state !== "ready") result.append(h("p", { class: "muted" }, "Loads with the customer's profile."));
    }
    return view;
  }

  async function runAction(convId, name, input, key) {
    const path = `/v1/conversations/${encodeURIComponent(convId)}/actions/${encodeURIComponent(name)}`;
    try {
      const r = await api(path, { method: "POST", body: { input }, headers: key ? { "idempotency-key": key } : undefined });
      tellHost({ type: "deskbridge:action", action: name, outcome: "ok", status: r && r.meta ? r.meta.status : undefined, external_ref: S.ref });
      return r;
    } catch (p) {
      tellHost({ type: "deskbridge:action", action: name, outcome: p.slug, external_ref: S.ref });
      throw p;
    }
  }

  function problemView(p) {
    return h(
      "div",
      { class: "card-error", role: "alert", "data-testid": "action-error", "data-problem": p.slug },
      h("p", {}, sentence(p)),
      p.detail && p.slug !== "network" ? h("p", { class: "muted small" }, `Details: ${p.detail}`) : null,
      p.traceId ? h("p", { class: "muted small" }, "Trace ", h("code", {}, p.traceId), ": quote it when you report this.") : null
    );
  }

  // --- forms built from an input schema ---------------------------------------------------------

  // Values an id field may take, from the customer card: `account_id` offers
  // the ids of the profile's `accounts`, `card_id` those of its `cards`.
  function suggestions(field) {
    const m = /^(.*)_id$/.exec(field);
    const p = S.card.profile;
    if (!m || !p) return [];
    const list = p[`${m[1]}s`];
    if (!Array.isArray(list)) return [];
    return list.filter((x) => x && typeof x === "object" && x.id !== undefined).map((x) => ({ value: String(x.id), label: [x.type, x.brand, x.last4 ? `…${x.last4}` : null, x.status].filter(Boolean).map(String).join(" · ") }));
  }

  // Fills the id fields' suggestions from the customer card (it may load
  // after the forms are built, and reload).
  function fillSuggestions() {
    for (const list of document.querySelectorAll("#actions datalist[data-suggest]")) {
      const options = suggestions(list.dataset.suggest);
      list.replaceChildren(...options.map((o) => h("option", { value: o.value }, o.label)));
      const input = document.querySelector(`[list="${list.id}"]`);
      if (input) {
        if (options.length) input.setAttribute("placeholder", options[0].value);
        else input.removeAttribute("placeholder");
      }
    }
  }

  function constraintText(spec) {
    const bits = [];
    if (spec.minimum !== undefined && spec.maximum !== undefined) bits.push(`${spec.minimum} to ${spec.maximum}`);
    else if (spec.minimum !== undefined) bits.push(`at least ${spec.minimum}`);
    else if (spec.maximum !== undefined) bits.push(`at most ${spec.maximum}`);
    if (spec.maxLength !== undefined) bits.push(`up to ${spec.maxLength} characters`);
    if (spec.default !== undefined) bits.push(`default ${spec.default}`);
    return bits.join(", ");
  }

  function compilePattern(pattern) {
    if (typeof pattern !== "string") return null;
    try {
      return new RegExp(pattern);
    } catch (e) {
      return null; // a syntax JavaScript does not know: the gateway still checks it
    }
  }

  function actionForm(a, fields) {
    const formId = `form-${a.name}`;
    const controls = new Map();
    const grid = h("div", { class: "form-grid" });
    for (const f of fields) {
      const spec = f.spec;
      const inputId = `${formId}-${f.name}`;
      const hintId = `${inputId}-hint`;
      const errorId = `${inputId}-error`;
      const error = h("p", { id: errorId, class: "field-error", "data-testid": "field-error", "data-field": f.name, hidden: true });
      const hintText = [spec.description ? String(spec.description) : "", constraintText(spec)].filter(Boolean).join(" · ");
      const hint = hintText ? h("p", { id: hintId, class: "field-hint" }, hintText) : null;
      const describedBy = [hint ? hintId : null, errorId].filter(Boolean).join(" ");
      let control;
      if (f.name === "cursor" && spec.type === "string") {
        // A paging cursor is the company's to give (next_cursor), not the
        // agent's to type: the answer's "Next page" fills it in.
        control = h("input", { type: "hidden", name: f.name, "data-field": f.name });
        grid.append(control);
      } else if (spec.type === "boolean") {
        control = h("input", { id: inputId, type: "checkbox", name: f.name, "data-testid": "action-field", "data-field": f.name, "aria-describedby": describedBy });
        control.checked = spec.default === true;
        grid.append(h("div", { class: "field check-field" }, h("div", { class: "check" }, control, h("label", { for: inputId }, words(f.name))), hint, error));
      } else {
        if (Array.isArray(spec.enum)) {
          control = h(
            "select",
            { id: inputId, name: f.name, "data-testid": "action-field", "data-field": f.name, "aria-describedby": describedBy, "aria-required": f.required ? "true" : null },
            h("option", { value: "" }, f.required ? "Choose…" : "—"),
            spec.enum.map((v) => h("option", { value: String(v) }, words(v)))
          );
        } else {
          const numeric = spec.type === "integer" || spec.type === "number";
          control = h("input", {
            id: inputId,
            name: f.name,
            type: numeric ? "number" : "text",
            inputmode: spec.type === "integer" ? "numeric" : null,
            step: numeric ? (spec.type === "integer" ? "1" : "any") : null,
            min: numeric && spec.minimum !== undefined ? spec.minimum : null,
            max: numeric && spec.maximum !== undefined ? spec.maximum : null,
            maxlength: spec.maxLength !== undefined ? spec.maxLength : null,
            autocomplete: "off",
            spellcheck: "false",
            "data-testid": "action-field",
            "data-field": f.name,
            "aria-describedby": describedBy,
            "aria-required": f.required ? "true" : null,
          });
          if (!numeric && /_id$/.test(f.name)) {
            const listId = `${inputId}-list`;
            control.setAttribute("list", listId);
            grid.append(h("datalist", { id: listId, "data-suggest": f.name }));
          }
        }
        if (spec.default !== undefined) control.value = String(spec.default);
        const label = h("label", { for: inputId }, words(f.name), f.required ? h("span", { class: "required", "aria-hidden": "true" }, " *") : null);
        grid.append(h("div", { class: "field" }, label, control, hint, error));
      }
      control.addEventListener("input", () => setFieldError(f.name, ""));
      controls.set(f.name, { field: f, control, error });
    }
    const formError = h("p", { class: "form-error", role: "alert", "data-testid": "form-error", hidden: true });
    const submitButton = h("button", { class: "button primary", type: "submit" }, "Run");
    const el = h("form", { id: formId, class: "action-form", "data-testid": "action-form", novalidate: true }, grid, formError, h("div", { class: "form-actions" }, submitButton));

    function setFieldError(name, reason) {
      const c = controls.get(name);
      if (!c || !c.error.isConnected) return false;
      c.error.textContent = reason || "";
      c.error.hidden = !reason;
      if (reason) c.control.setAttribute("aria-invalid", "true");
      else c.control.removeAttribute("aria-invalid");
      return true;
    }

    // The input as the gateway takes it, and what is wrong with it here.
    function read() {
      const input = {};
      const errors = [];
      for (const [name, { field, control }] of controls) {
        const spec = field.spec;
        if (spec.type === "boolean") {
          input[name] = control.checked;
          continue;
        }
        const raw = control.value.trim();
        if (raw === "") {
          if (field.required) errors.push({ field: name, reason: "Required." });
          continue;
        }
        if (spec.type === "integer" || spec.type === "number") {
          const n = Number(raw);
          if (!Number.isFinite(n) || (spec.type === "integer" && !Number.isInteger(n))) {
            errors.push({ field: name, reason: spec.type === "integer" ? "Must be a whole number." : "Must be a number." });
            continue;
          }
          if (spec.minimum !== undefined && n < spec.minimum) errors.push({ field: name, reason: `Must be at least ${spec.minimum}.` });
          else if (spec.maximum !== undefined && n > spec.maximum) errors.push({ field: name, reason: `Must be at most ${spec.maximum}.` });
          else input[name] = n;
          continue;
        }
        const pattern = compilePattern(spec.pattern);
        if (Array.isArray(spec.enum) && !spec.enum.map(String).includes(raw)) errors.push({ field: name, reason: `Must be one of ${spec.enum.join(", ")}.` });
        else if (spec.maxLength !== undefined && [...raw].length > spec.maxLength) errors.push({ field: name, reason: `Must be at most ${spec.maxLength} characters.` });
        else if (pattern && !pattern.test(raw)) errors.push({ field: name, reason: "Does not have the expected format." });
        else input[name] = raw;
      }
      return { input, errors };
    }

    function showErrors(errors) {
      const loose = [];
      for (const e of errors || []) if (!setFieldError(e.field, words(e.reason))) loose.push(`${e.field}: ${e.reason}`);
      formError.classList.remove("info");
      setText(formError, loose.length ? `The gateway refused the input. ${loose.join("; ")}` : (errors || []).length ? "The gateway refused the input: see the fields marked." : "");
      const first = (errors || []).map((e) => controls.get(e.field)).find(Boolean);
      if (first) first.control.focus();
    }

    let handler = null;
    function submit() {
      for (const name of controls.keys()) setFieldError(name, "");
      setText(formError, "");
      const { input, errors } = read();
      if (errors.length) return showErrors(errors);
      if (handler) handler(input);
    }
    el.addEventListener("submit", (e) => {
      e.preventDefault();
      // Run by hand starts at the first page.
      if (controls.has("cursor")) controls.get("cursor").control.value = "";
      submit();
    });

    return {
      el,
      submit,
      showErrors,
      onSubmit(fn, label, testid) {
        handler = fn;
        submitButton.textContent = label;
        submitButton.dataset.testid = testid;
      },
      busy(on) {
        submitButton.disabled = on;
      },
      set(name, value) {
        const c = controls.get(name);
        if (c) c.control.value = String(value);
      },
      has: (name) => controls.has(name),
      focus() {
        const first = controls.values().next().value;
        if (first) first.control.focus();
      },
    };
  }

  // --- writes: confirm, then send once --------------------------------------------------------------
  // One Idempotency-Key per confirmation: sending it again (a double click, a
  // retry after a lost answer) reuses the key, so the company acts once.

  // A random UUID; randomUUID itself exists only in secure contexts (HTTPS, localhost).
  function newKey() {
    if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const x = [...b].map((n) => n.toString(16).padStart(2, "0")).join("");
    return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
  }

  function confirmWrite(a, input, done, form) {
    const convId = S.current && S.current.id;
    if (!convId) return;
    const dialog = $("confirm-dialog");
    const key = newKey();
    const payload = JSON.stringify({ input }, null, 2);
    const status = h("div", { class: "confirm-status", "aria-live": "polite" });
    const cancel = h("button", { class: "button ghost", type: "button", "data-testid": "confirm-cancel" }, "Cancel");
    const send = h("button", { class: "button danger", type: "button", "data-testid": "confirm-submit" }, "Yes, send it");
    const summary = Object.entries(input);
    let sending = false;
    let finished = false;

    async function go() {
      if (sending || finished) return; // a double click sends once
      sending = true;
      send.disabled = true;
      cancel.disabled = true;
      send.textContent = "Sending…";
      status.replaceChildren();
      for (let attempt = 0; ; attempt++) {
        try {
          const r = await runAction(convId, a.name, input, key);
          finished = true;
          sending = false;
          dialog.close();
          done(r, answerContext(a, input, r.meta));
          toast(r.meta && r.meta.replayed ? `${a.name}: already done, the company was not called again.` : `${a.name}: done.`);
          return;
        } catch (p) {
          // The first request with this key still runs: wait for its outcome.
          if (p.slug === "idempotency_key_in_flight" && attempt < 5) {
            await new Promise((resolve) => setTimeout(resolve, 400 * (attempt + 1)));
            continue;
          }
          sending = false;
          cancel.disabled = false;
          if (p.status === 401) return dialog.close();
          if (p.slug === "invalid_action_input" && form) {
            finished = true;
            dialog.close();
            form.showErrors(p.errors);
            return;
          }
          send.disabled = false;
          // The same key again: if the first try reached the company, it is not run twice.
          send.textContent = "Try again";
          status.replaceChildren(problemView(p), h("p", { class: "muted small" }, "Trying again sends the same request with the same key: the company acts on it at most once."));
          return;
        }
      }
    }

    send.addEventListener("click", go);
    cancel.addEventListener("click", () => {
      if (!sending) dialog.close();
    });
    // Escape does not hide a request under way: its outcome shows here.
    dialog.oncancel = (e) => {
      if (sending) e.preventDefault();
    };
    dialog.replaceChildren(
      h(
        "div",
        { class: "dialog-body", "data-testid": "confirm-dialog" },
        h("h3", { id: "confirm-title" }, "Confirm ", h("code", {}, a.name)),
        a.description ? h("p", { class: "dialog-what" }, String(a.description)) : null,
        h("p", { class: "dialog-lead" }, "This changes the customer's data at the company. deskbridge sends exactly this, once:"),
        summary.length
          ? h("dl", { class: "confirm-summary" }, summary.map(([k, v]) => h("div", {}, h("dt", {}, words(k)), h("dd", {}, typeof v === "boolean" ? (v ? "Yes" : "No") : String(v)))))
          : null,
        h(
          "div",
          { class: "payload" },
          h("p", { class: "payload-line" }, h("code", {}, `POST /v1/conversations/${shortId(convId)}/actions/${a.name}`)),
          h("pre", { class: "payload-json", "data-testid": "confirm-payload" }, payload),
          h("p", { class: "payload-line muted" }, h("code", { "data-testid": "confirm-key" }, `Idempotency-Key: ${key}`))
        ),
        status,
        h("div", { class: "dialog-actions" }, cancel, send)
      )
    );
    dialog.setAttribute("aria-labelledby", "confirm-title");
    dialog.showModal();
    send.focus();
  }

  // --- answers --------------------------------------------------------------------------------

  function answerContext(action, input, meta) {
    const masked = new Map(((meta && meta.masked) || []).map((m) => [m.pointer, m.mask]));
    return { action, input: input || {}, masked, convId: S.current && S.current.id };
  }

  function showAnswer(target, ctx, r, form) {
    const meta = r.meta || {};
    const bits = [`HTTP ${meta.status}`];
    if (Number.isFinite(meta.latency_ms)) bits.push(`${meta.latency_ms} ms`);
    if (meta.cached) bits.push("cached");
    if (ctx.masked.size) bits.push(`${ctx.masked.size} masked`);
    const next = r.data && typeof r.data === "object" && typeof r.data.next_cursor === "string" && form && form.has("cursor") ? r.data.next_cursor : null;
    ctx.paged = Boolean(form && form.has("cursor"));
    const replayed = meta.replayed ? [h("p", { class: "notice replayed", "data-testid": "action-replayed" }, "Already done with this confirmation: the first outcome, given again. The company was not called again.")] : [];
    target.replaceChildren(
      ...replayed,
      answerView(ctx, r.data),
      h(
        "div",
        { class: "card-foot result-foot" },
        h("p", { class: "muted small", "data-testid": "action-meta" }, bits.join(" · ")),
        next
          ? h(
              "button",
              {
                class: "button ghost small",
                type: "button",
                "data-testid": "action-next-page",
                onclick: () => {
                  form.set("cursor", next);
                  form.submit();
                },
              },
              "Next page"
            )
          : null
      )
    );
  }

  const isMoney = (v) => v && typeof v === "object" && !Array.isArray(v) && "amount" in v && "currency" in v && Object.keys(v).length === 2;
  const isTable = (v) => Array.isArray(v) && v.length > 0 && v.every((x) => x && typeof x === "object" && !Array.isArray(x));
  const ptr = (base, key) => `${base}/${String(key).replace(/~/g, "~0").replace(/\//g, "~1")}`;

  // An answer, whatever its shape: objects as label/value pairs, arrays of
  // objects as tables, every value as text (never markup).
  function answerView(ctx, data, pointer = "") {
    if (isTable(data)) return tableView(ctx, data, pointer, null);
    if (data && typeof data === "object" && !Array.isArray(data) && !isMoney(data)) {
      const pairs = [];
      const blocks = [];
      for (const [k, v] of Object.entries(data)) {
        if (ctx.paged && pointer === "" && k === "next_cursor") continue; // the "Next page" button
        const p = ptr(pointer, k);
        if (isTable(v)) blocks.push(tableView(ctx, v, p, words(k)));
        else if (v && typeof v === "object" && !isMoney(v) && !ctx.masked.has(p) && Object.keys(v).length) {
          blocks.push(h("div", { class: "answer-block" }, h("h4", { class: "answer-title" }, words(k)), answerView(ctx, v, p)));
        } else pairs.push(h("div", { "data-field": k }, h("dt", {}, words(k)), h("dd", {}, valueNode(ctx, p, v))));
      }
      return h("div", { class: "answer", "data-testid": "answer" }, pairs.length ? h("dl", { class: "answer-pairs" }, pairs) : null, blocks);
    }
    return h("div", { class: "answer", "data-testid": "answer" }, h("p", {}, leaf(ctx, pointer, data)));
  }

  function tableView(ctx, rows, pointer, caption) {
    const seen = [];
    for (const r of rows) for (const k of Object.keys(r)) if (!seen.includes(k)) seen.push(k);
    const numeric = new Set(seen.filter((c) => rows.every((r) => r[c] === null || r[c] === undefined || typeof r[c] === "number" || isMoney(r[c]))));
    // Answers may come with their keys sorted: ids first, then times, text,
    // states, and amounts last (right-aligned, as in any statement).
    const rank = (c) => (c === "id" || c.endsWith("_id") ? 0 : /(_at|_on|date|time)$/.test(c) ? 1 : numeric.has(c) ? 4 : /(^|_)status$/.test(c) ? 3 : 2);
    const columns = seen.map((c, i) => [rank(c), i, c]).sort((x, y) => x[0] - y[0] || x[1] - y[1]).map((x) => x[2]);
    return h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "table answer-table", "data-testid": "result-table" },
        caption ? h("caption", {}, caption, h("span", { class: "muted caption-count" }, ` · ${rows.length}`)) : null,
        h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: numeric.has(c) ? "num" : null }, words(c))))),
        h(
          "tbody",
          {},
          rows.map((r, i) =>
            h(
              "tr",
              { "data-testid": "result-row" },
              columns.map((c) => {
                const v = r[c];
                const negative = isMoney(v) && String(v.amount).trim().startsWith("-");
                return h("td", { class: [numeric.has(c) ? "num" : "", negative ? "negative" : ""].join(" ").trim() || null, "data-column": c }, cell(ctx, ptr(ptr(pointer, i), c), v));
              })
            )
          )
        )
      )
    );
  }

  // A value in an answer: ids (`acc-1001`, `card_…`) in the code font.
  function valueNode(ctx, pointer, v) {
    if (typeof v === "string" && !ctx.masked.has(pointer) && /^[a-z]{2,5}[-_][A-Za-z0-9_-]+$/.test(v)) return h("code", {}, v);
    return leaf(ctx, pointer, v);
  }

  function cell(ctx, pointer, v) {
    if (v && typeof v === "object" && !isMoney(v) && !ctx.masked.has(pointer)) {
      if (Array.isArray(v)) return v.length ? v.map((x) => (x && typeof x === "object" ? JSON.stringify(x) : String(x))).join(", ") : "—";
      return h("span", { class: "cell-pairs" }, Object.entries(v).map(([k, x]) => h("span", {}, `${words(k)}: `, valueNode(ctx, ptr(pointer, k), x))));
    }
    return valueNode(ctx, pointer, v);
  }

  const ISO_INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/;

  function plain(v) {
    if (v === null || v === undefined || v === "") return "—";
    if (typeof v === "boolean") return v ? "Yes" : "No";
    if (isMoney(v)) return money(v);
    if (typeof v === "string" && ISO_INSTANT.test(v) && !Number.isNaN(Date.parse(v))) {
      const at = Date.parse(v);
      const day = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeZone: "UTC" }).format(at);
      const time = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZone: "UTC" }).format(at);
      return `${day}, ${time} UTC`;
    }
    if (typeof v === "string" && /^\d{4}-\d{2}-\d{2}$/.test(v)) return calendarDate(v);
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }

  // One value; a masked one says so, with a reveal button where the role allows it.
  function leaf(ctx, pointer, v) {
    if (!ctx || !ctx.masked.has(pointer)) return plain(v);
    const mask = ctx.masked.get(pointer);
    const wrap = h(
      "span",
      { class: "masked", "data-testid": "masked-value", "data-pointer": pointer, "data-mask": mask },
      h("span", { class: "masked-text" }, String(v === null || v === undefined ? "••••" : v)),
      h("span", { class: "masked-tag", title: mask === "last4" ? "Masked: only the last four characters are shown" : "Masked: hidden from agents" }, "masked")
    );
    if (ctx.action && ctx.action.may_reveal) {
      wrap.append(h("button", { class: "link-button reveal-button", type: "button", "data-testid": "reveal-button", onclick: () => askReveal(ctx, pointer, wrap) }, "Reveal"));
    }
    return wrap;
  }

  function askReveal(ctx, pointer, wrap) {
    const dialog = $("reveal-dialog");
    const reason = h("input", { id: "reveal-reason", maxlength: "500", autocomplete: "off", "data-testid": "reveal-reason", placeholder: "e.g. the customer asked to confirm the full number" });
    const error = h("p", { class: "form-error", role: "alert", "data-testid": "reveal-error", hidden: true });
    const submit = h("button", { class: "button primary", type: "submit", "data-testid": "reveal-submit" }, "Reveal");
    const form = h(
      "form",
      { class: "dialog-body", novalidate: true },
      h("h3", { id: "reveal-title" }, "Reveal a masked value"),
      h("p", { class: "dialog-lead" }, "The value is masked for agents. Say why you need it: the reason is kept in the audit log with your name."),
      h("p", { class: "payload-line" }, h("code", {}, `${ctx.action.name} ${pointer}`)),
      h("label", { for: "reveal-reason" }, "Reason"),
      reason,
      error,
      h("div", { class: "dialog-actions" }, h("button", { class: "button ghost", type: "button", onclick: () => dialog.close() }, "Cancel"), submit)
    );
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const why = reason.value.trim();
      if (!why) return setText(error, "Enter a reason.");
      submit.disabled = true;
      try {
        const r = await api(`/v1/conversations/${encodeURIComponent(ctx.convId)}/actions/${encodeURIComponent(ctx.action.name)}/reveal`, {
          method: "POST",
          body: { pointer, reason: why, input: ctx.input },
        });
        dialog.close();
        wrap.replaceWith(
          h(
            "span",
            { class: "revealed", "data-testid": "revealed-value", "data-pointer": pointer, title: `Revealed for: ${why}` },
            h("span", {}, plain(r.value)),
            h("span", { class: "revealed-tag" }, "revealed · audited")
          )
        );
      } catch (p) {
        submit.disabled = false;
        if (p.status !== 401) setText(error, sentence(p));
      }
    });
    dialog.replaceChildren(form);
    dialog.oncancel = null;
    dialog.setAttribute("aria-labelledby", "reveal-title");
    dialog.showModal();
    reason.focus();
  }

  // --- admin ----------------------------------------------------------------------------------

  function renderAdmin(query) {
    const isAdmin = S.agent && S.agent.role === "admin";
    show($("admin-forbidden"), !isAdmin);
    show($("admin-content"), isAdmin);
    if (!isAdmin) {
      $("admin-forbidden-role").textContent = S.agent ? S.agent.role : "";
      return;
    }
    if (!S.connectionsLoaded) loadConnections();
    loadAgentTokens();
    $("audit-agent").value = query.get("agent") || "";
    $("audit-conversation").value = query.get("conversation") || "";
    const limit = query.get("limit") || "100";
    if ([...$("audit-limit").options].some((o) => o.value === limit)) $("audit-limit").value = limit;
    loadAudit();
  }

  async function loadConnections() {
    try {
      const r = await api("/v1/connections");
      S.connectionsLoaded = true;
      setText($("connections-error"), "");
      const list = r.connections || [];
      $("connections").replaceChildren(...(list.length ? list.map(connectionView) : [h("p", { class: "empty" }, "No connections are configured.")]));
    } catch (p) {
      if (p.status === 403) renderAdminForbidden();
      else if (p.status !== 401) setText($("connections-error"), `The connections could not be loaded. ${sentence(p)}`);
    }
  }

  function renderAdminForbidden() {
    show($("admin-forbidden"), true);
    show($("admin-content"), false);
    $("admin-forbidden-role").textContent = S.agent ? S.agent.role : "";
  }

  function systemAuthText(sa) {
    if (!sa) return "—";
    const parts = [words(String(sa.kind || "").replace(/oauth2/, "OAuth 2.0"))];
    if (sa.client_id) parts.push(`client ${sa.client_id}`);
    if (sa.token_url) parts.push(sa.token_url);
    return parts.join(" · ");
  }

  function connectionView(c) {
    const result = h("div", { class: "probe-result", "data-testid": "probe-result", "aria-live": "polite" });
    const button = h("button", { class: "button", type: "button", "data-testid": "probe-button", "aria-describedby": `conn-${c.name}-title` }, "Probe");
    button.addEventListener("click", () => probe(c.name, button, result));
    const ca = c.customer_auth || {};
    return h(
      "article",
      { class: "connection", "data-testid": "connection", "data-name": c.name },
      h("div", { class: "connection-head" }, h("h4", { id: `conn-${c.name}-title` }, c.name), h("code", { class: "muted" }, c.base_url), button),
      h(
        "dl",
        { class: "facts" },
        h("div", {}, h("dt", {}, "Timeout"), h("dd", {}, `${c.timeout_ms} ms`)),
        h("div", {}, h("dt", {}, "System login"), h("dd", {}, systemAuthText(c.system_auth))),
        h("div", {}, h("dt", {}, "API key header"), h("dd", {}, c.api_key_header ? h("code", {}, c.api_key_header) : "none")),
        h("div", {}, h("dt", {}, "Customer token"), h("dd", {}, ca.in ? [`${ca.in} `, h("code", {}, String(ca.name || ""))] : "—")),
        h(
          "div",
          {},
          h("dt", {}, "Actions"),
          h("dd", {}, h("ul", { class: "inline-list" }, (c.actions || []).map((a) => h("li", {}, h("code", {}, a.name), ` ${a.method} ${a.path}`, a.kind === "write" ? [" ", h("span", { class: "kind-badge kind-write" }, "write")] : null))))
        )
      ),
      result
    );
  }

  const STEP_LABELS = { system_token: "System token", base_url: "Base URL" };

  async function probe(name, button, result) {
    button.disabled = true;
    button.textContent = "Probing…";
    result.replaceChildren(h("p", { class: "loading" }, h("span", { class: "spinner", "aria-hidden": "true" }), `Probing ${name}…`));
    try {
      const r = await api(`/v1/connections/${encodeURIComponent(name)}/probe`, { method: "POST" });
      const steps = r.steps || [];
      result.replaceChildren(
        h("p", { class: `probe-summary ${r.ok ? "ok" : "fail"}`, "data-testid": "probe-summary", "data-ok": String(Boolean(r.ok)) }, r.ok ? "✓ Every step passed" : "✗ A step failed"),
        h(
          "ol",
          { class: "steps" },
          steps.map((s) => {
            const extra = Object.entries(s).filter(([k, v]) => !["step", "ok", "latency_ms"].includes(k) && v !== null && v !== undefined);
            return h(
              "li",
              { class: `step ${s.ok ? "ok" : "fail"}`, "data-testid": "probe-step", "data-step": s.step, "data-ok": String(Boolean(s.ok)) },
              h("span", { class: "step-icon", "aria-hidden": "true" }, s.ok ? "✓" : "✗"),
              h("span", { class: "step-name" }, STEP_LABELS[s.step] || words(s.step), h("span", { class: "visually-hidden" }, s.ok ? " passed" : " failed")),
              h("span", { class: "step-latency", "data-testid": "probe-latency" }, Number.isFinite(s.latency_ms) ? `${s.latency_ms} ms` : "—"),
              extra.length ? h("span", { class: "step-detail" }, extra.map(([k, v]) => `${k === "detail" ? "" : `${words(k)}: `}${typeof v === "object" ? JSON.stringify(v) : v}`).join(" · ")) : null
            );
          })
        )
      );
    } catch (p) {
      if (p.status !== 401) result.replaceChildren(h("p", { class: "card-error", role: "alert" }, sentence(p)));
    } finally {
      button.disabled = false;
      button.textContent = "Probe again";
    }
  }

  // When a token expires, said from now: "in 12 days", "expired".
  function untilText(ts) {
    const secs = ts - Date.now() / 1000;
    if (secs <= 0) return "expired";
    if (secs < 3600) return `in ${Math.max(1, Math.round(secs / 60))} min`;
    if (secs < 2 * 86400) return `in ${Math.round(secs / 3600)} h`;
    return `in ${Math.round(secs / 86400)} days`;
  }

  // Fourteen days: time enough to rotate a desk's token before it stops working.
  const EXPIRY_WARNING_SECS = 14 * 86400;

  async function loadAgentTokens() {
    try {
      const r = await api("/v1/agent-tokens");
      setText($("tokens-error"), "");
      const tokens = r.tokens || [];
      $("token-rows").replaceChildren(...tokens.map(tokenRow));
      show($("tokens-empty"), tokens.length === 0);
    } catch (p) {
      if (p.status === 403) renderAdminForbidden();
      else if (p.status !== 401) setText($("tokens-error"), `The agent tokens could not be loaded. ${sentence(p)}`);
    }
  }

  function tokenRow(t) {
    const left = t.expires_at - Date.now() / 1000;
    const state = left <= 0 ? "expired" : left < EXPIRY_WARNING_SECS ? "soon" : "ok";
    return h(
      "tr",
      { "data-testid": "token-row", "data-agent": t.agent, "data-expires-at": t.expires_at, "data-state": state, "data-previous": String(Boolean(t.previous)) },
      h("td", {}, t.agent),
      h("td", {}, t.role),
      h("td", {}, h("code", {}, t.id), t.previous ? h("span", { class: "muted" }, " rotating out") : null),
      h(
        "td",
        {},
        h("time", { datetime: new Date(t.expires_at * 1000).toISOString(), title: absolute(t.expires_at) }, absolute(t.expires_at)),
        " ",
        h("span", { class: `pill ${state === "ok" ? "outcome-ok" : "outcome-fail"}`, "data-testid": "token-expiry" }, untilText(t.expires_at))
      )
    );
  }

  let auditSeq = 0;
  async function loadAudit() {
    const params = new URLSearchParams();
    const agent = $("audit-agent").value.trim();
    const conversation = $("audit-conversation").value.trim();
    if (agent) params.set("agent", agent);
    if (conversation) params.set("conversation", conversation);
    params.set("limit", $("audit-limit").value);
    const seq = ++auditSeq;
    try {
      const r = await api(`/v1/audit?${params}`);
      if (seq !== auditSeq) return;
      setText($("audit-error"), "");
      const records = r.records || [];
      $("audit-rows").replaceChildren(...records.map(auditRow));
      show($("audit-empty"), records.length === 0);
    } catch (p) {
      if (seq !== auditSeq) return;
      if (p.status === 403) renderAdminForbidden();
      else if (p.status !== 401) setText($("audit-error"), `The audit log could not be loaded. ${sentence(p)}`);
    }
  }

  function auditRow(r) {
    // A write's first outcome given again, or a read's answer reused, went well too.
    const ok = ["ok", "replayed", "cached"].includes(r.outcome);
    return h(
      "tr",
      { "data-testid": "audit-row", "data-agent": r.agent, "data-caller": r.caller || "agent", "data-conversation-id": r.conversation_id, "data-outcome": r.outcome, "data-trace-id": r.trace_id || "", title: r.trace_id ? `trace ${r.trace_id}` : "" },
      h("td", {}, timeEl(r.at)),
      // A customer's own run names their session, not an agent.
      h("td", {}, r.caller && r.caller !== "agent" ? [h("span", { class: "caller" }, words(r.caller)), " ", h("code", { title: r.agent }, shortId(r.agent))] : r.agent),
      h("td", {}, h("a", { href: `#/c/${encodeURIComponent(r.conversation_id)}`, title: r.conversation_id }, h("code", {}, shortId(r.conversation_id)))),
      h(
        "td",
        {},
        `${r.connection} · `,
        h("code", {}, r.action),
        r.input_fields && r.input_fields.length ? h("span", { class: "audit-input", title: "The input's field names; its values are never kept" }, ` (${r.input_fields.join(", ")})`) : null,
        r.revealed ? h("span", { class: "audit-reveal", "data-testid": "audit-reveal" }, "revealed ", h("code", {}, r.revealed), r.reason ? `: “${r.reason}”` : null) : null
      ),
      h("td", {}, h("span", { class: `pill ${ok ? "outcome-ok" : "outcome-fail"}` }, words(r.outcome))),
      h("td", {}, r.status === null || r.status === undefined ? "—" : String(r.status)),
      h("td", { class: "num" }, `${r.latency_ms} ms`)
    );
  }

  function submitAuditFilter(e) {
    e.preventDefault();
    const params = new URLSearchParams();
    const agent = $("audit-agent").value.trim();
    const conversation = $("audit-conversation").value.trim();
    if (agent) params.set("agent", agent);
    if (conversation) params.set("conversation", conversation);
    if ($("audit-limit").value !== "100") params.set("limit", $("audit-limit").value);
    const q = params.toString();
    const target = `#/admin${q ? `?${q}` : ""}`;
    if (location.hash === target) loadAudit();
    else location.hash = target;
  }

  // --- routing ------------------------------------------------------------------------------------

  function parseHash() {
    const raw = location.hash.replace(/^#/, "") || "/";
    const [path, qs] = raw.split("?");
    const query = new URLSearchParams(qs || "");
    const m = /^\/c\/([^/]+)$/.exec(path);
    if (m) {
      // A mangled link (`#/c/%E0`) is not a conversation: show the list.
      try {
        return { view: "conversation", id: decodeURIComponent(m[1]), query };
      } catch (e) {
        return { view: "list", id: null, query };
      }
    }
    if (path === "/admin") return { view: "admin", id: null, query };
    return { view: "list", id: null, query };
  }

  function route() {
    if (!S.agent) return;
    const prev = S.route;
    const next = parseHash();
    S.route = next;
    const app = $("app");
    app.dataset.view = next.view;
    show($("desk"), next.view !== "admin");
    show($("admin"), next.view === "admin");
    $("nav-conversations").toggleAttribute("aria-current", next.view !== "admin");
    $("nav-admin").toggleAttribute("aria-current", next.view === "admin");
    if (next.view === "admin") {
      document.title = "Admin · deskbridge console";
      renderAdmin(next.query);
    } else if (next.view === "conversation") {
      document.title = "Conversation · deskbridge console";
      openConversation(next.id);
    } else {
      document.title = "Conversations · deskbridge console";
      S.current = null;
      S.card = { convId: null, state: "idle", seq: S.card.seq + 1, loading: false };
      S.actions = { convId: null, views: [] };
      $("detail-body").replaceChildren();
      $("detail-body").hidden = true;
      $("detail-placeholder").hidden = false;
    }
    renderList();
    // Move focus to the new view for keyboard and screen-reader users, but not
    // on the first render (the sign-in or the page load decides that).
    if (S.routed && (prev.view !== next.view || prev.id !== next.id)) {
      const target = next.view === "admin" ? $("admin-title") : next.view === "conversation" ? $("detail-heading") : $("list-title");
      if (target) {
        if (!target.hasAttribute("tabindex")) target.setAttribute("tabindex", "-1");
        target.focus({ preventScroll: false });
      }
    }
    S.routed = true;
  }

  // Relative times stay true without a re-render.
  function tick() {
    for (const t of document.querySelectorAll("time[data-ts]")) t.textContent = relative(Number(t.dataset.ts));
  }

  // --- start ------------------------------------------------------------------------------------------

  // --- embedded card mode ------------------------------------------------------------------------
  // /card?host=<desk origin>: a desk's sidebar frames this page, and the
  // gateway let only that origin frame it (CSP frame-ancestors). The desk
  // hands over the agent's token (or relies on a console sign-in) and its own
  // ticket id by postMessage; the card listens to its parent at that origin
  // only, and writes to that origin only. The contract is in docs/agent-card.md.

  const HOST = CARD ? new URLSearchParams(location.search).get("host") : null;
  const CARD_PROTOCOL = 1;

  function tellHost(msg) {
    if (!CARD || !HOST || window.parent === window) return;
    window.parent.postMessage({ ...msg, version: CARD_PROTOCOL }, HOST);
  }

  function tellCardState(state, data) {
    const d = S.current || {};
    const name = S.card.profile && S.card.profile.name ? String(S.card.profile.name) : null;
    tellHost({
      type: "deskbridge:state",
      state,
      external_ref: S.ref,
      conversation_id: d.id || null,
      customer_name: state === "ready" ? name : null,
      problem: data && data.problem ? data.problem.slug : undefined,
    });
  }

  function cardNotice(text, state) {
    const el = $("card-notice");
    setText(el, text);
    el.dataset.state = state || "";
  }

  function bootCard() {
    if (!HOST || window.parent === window) {
      cardNotice("This card opens inside a desk's sidebar, not on its own.", "standalone");
      return;
    }
    window.addEventListener("message", onHostMessage);
    setInterval(tick, 30000);
    // The desk sizes its frame to the card.
    let height = 0;
    new ResizeObserver(() => {
      const now = Math.ceil(document.documentElement.scrollHeight);
      if (now !== height) tellHost({ type: "deskbridge:resize", height: (height = now) });
    }).observe(document.body);
    $("live").hidden = false;
    tellHost({ type: "deskbridge:ready" });
  }

  async function onHostMessage(e) {
    // Only the desk that frames the card, at the origin the gateway let frame it.
    if (e.source !== window.parent || e.origin !== HOST) return;
    const m = e.data;
    if (!m || typeof m !== "object") return;
    if (m.type === "deskbridge:sign-out") return cardSignedOut("The desk signed out.");
    if (m.type !== "deskbridge:open") return;
    if (typeof m.external_ref !== "string" || !m.external_ref) {
      tellHost({ type: "deskbridge:state", state: "invalid", detail: "deskbridge:open needs an external_ref" });
      return;
    }
    const tokenGiven = typeof m.token === "string" && m.token !== "";
    const newCredential = tokenGiven && m.token !== S.token;
    if (newCredential) {
      stopLive();
      S.token = m.token;
      S.agent = null;
      actionLists.clear();
    }
    S.ref = m.external_ref;
    S.refConnection = typeof m.connection === "string" && m.connection ? m.connection : null;
    $("card-ref").textContent = S.ref;
    if (!S.agent) {
      cardNotice("Signing in…", "signing_in");
      try {
        // A token says who it is at /v1/me; a console sign-in (the desk on
        // the gateway's own site) at /console/api/me, with its CSRF token.
        if (S.token) S.agent = await api("/v1/me", { quiet: true });
        else {
          const me = await api("/console/api/me", { quiet: true });
          S.agent = me.agent;
          S.csrf = me.csrf_token;
        }
      } catch (p) {
        return cardSignedOut(p.status === 401 ? "" : sentence(p));
      }
      startLive();
    }
    lookup();
  }

  let lookupTimer = null;
  function scheduleLookup() {
    clearTimeout(lookupTimer);
    lookupTimer = setTimeout(lookup, 150);
  }

  let lookupSeq = 0;
  async function lookup() {
    if (!S.agent || !S.ref) return;
    const seq = ++lookupSeq;
    const q = new URLSearchParams({ external_ref: S.ref });
    if (S.refConnection) q.set("connection", S.refConnection);
    let r;
    try {
      r = await api(`/v1/conversations?${q}`);
    } catch (p) {
      if (seq !== lookupSeq || p.status === 401) return;
      cardNotice(sentence(p), "error");
      tellHost({ type: "deskbridge:state", state: "error", external_ref: S.ref, problem: p.slug });
      return;
    }
    if (seq !== lookupSeq) return;
    const found = (r.conversations || [])[0];
    if (!found) {
      S.current = null;
      S.route = { view: "conversation", id: null, query: new URLSearchParams() };
      $("detail-body").replaceChildren();
      $("detail-body").hidden = true;
      cardNotice(`No conversation is linked to ${S.ref} yet. It shows here as soon as the customer's chat, or an agent, names it.`, "not_found");
      tellHost({ type: "deskbridge:state", state: "not_found", external_ref: S.ref, conversation_id: null });
      return;
    }
    cardNotice("", "");
    S.route = { view: "conversation", id: found.id, query: new URLSearchParams() };
    openConversation(found.id);
  }

  function cardSignedOut(message) {
    stopLive();
    S.token = null;
    S.agent = null;
    S.csrf = null;
    S.current = null;
    S.card = { convId: null, state: "idle", seq: S.card.seq + 1, loading: false };
    S.actions = { convId: null, views: [] };
    actionLists.clear();
    $("detail-body").replaceChildren();
    $("detail-body").hidden = true;
    setLive("down");
    cardNotice(message || "The desk's agent credential is not valid (or has expired). The desk must hand over a fresh one.", "signed_out");
    tellHost({ type: "deskbridge:state", state: "signed_out", external_ref: S.ref, conversation_id: null });
  }

  // EventSource cannot send a header: with a token, the stream is read with fetch.
  async function startTokenLive() {
    const ctrl = new AbortController();
    S.liveAbort = ctrl;
    try {
      const res = await fetch("/v1/events", {
        headers: { accept: "text/event-stream", authorization: `Bearer ${S.token}` },
        signal: ctrl.signal,
        cache: "no-store",
      });
      if (res.status === 401) return signedOut("");
      if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
      setLive("live");
      S.liveBackoff = 1000;
      if (S.liveDown) {
        // Events are not replayed: catch up on what happened meanwhile.
        S.liveDown = false;
        scheduleLookup();
      }
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let name = "message";
          const data = [];
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) name = line.slice(6).trim();
            else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
          }
          if (data.length) onGatewayEvent(name, data.join("\n"));
        }
      }
    } catch (e) {
      if (ctrl.signal.aborted) return;
    }
    if (S.liveAbort !== ctrl) return;
    // Ended (a restart, a revoked token) or failed: again, a little later each time.
    S.liveDown = true;
    setLive("reconnecting");
    clearTimeout(S.liveTimer);
    S.liveTimer = setTimeout(() => {
      if (S.liveAbort === ctrl) startTokenLive();
    }, S.liveBackoff);
    S.liveBackoff = Math.min(S.liveBackoff * 2, 30000);
  }

  async function boot() {
    if (CARD) return bootCard();
    $("signin-form").addEventListener("submit", submitSignin);
    $("signin-mode").addEventListener("click", () => setTokenMode(!tokenMode));
    $("signout").addEventListener("click", signOut);
    $("list-more").addEventListener("click", loadMore);
    $("audit-filter").addEventListener("submit", submitAuditFilter);
    $("audit-reset").addEventListener("click", () => {
      $("audit-agent").value = "";
      $("audit-conversation").value = "";
      $("audit-limit").value = "100";
      if (location.hash === "#/admin") loadAudit();
      else location.hash = "#/admin";
    });
    window.addEventListener("hashchange", route);
    // The skip link must not change the hash: the hash is the route.
    document.querySelector(".skip-link").addEventListener("click", (e) => {
      e.preventDefault();
      $("main").focus();
    });
    setInterval(tick, 30000);

    loadSignInOptions();
    let hinted = false;
    try {
      hinted = localStorage.getItem(SIGNED_IN_HINT) === "1";
    } catch (e) {
      hinted = false;
    }
    // Back from the identity provider, signed in: take the session.
    const query = new URLSearchParams(location.search);
    if (query.has("signed_in")) {
      hinted = true;
      query.delete("signed_in");
      const rest = query.toString();
      history.replaceState(null, "", `${location.pathname}${rest ? `?${rest}` : ""}${location.hash}`);
    }
    // Only ask /me when this browser signed in before: a signed-out visit then
    // makes no failing request.
    if (!hinted) return showSignin("");
    try {
      enter(await api("/console/api/me", { quiet: true }));
    } catch (p) {
      signedOut(p.status === 401 ? "" : sentence(p));
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
  else boot();
})();
