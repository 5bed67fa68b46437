/*! deskbridge web SDK: hands the customer's login from a company's page to the
 * deskbridge gateway, and hands a fresh one whenever the gateway asks for it.
 * No dependencies; defines Deskbridge (window.Deskbridge in a classic script).
 * Documented in docs/web-sdk.md. */
var Deskbridge = (function (global) {
  "use strict";

  // The release (the gateway's version); the API generation is v1.
  var VERSION = "0.1.0";
  var STORAGE_PREFIX = "deskbridge.session:";
  var BACKOFF_MIN_MS = 1000;
  var BACKOFF_MAX_MS = 30000;
  // Two refreshes closer than this are spaced out, so a token the gateway
  // keeps refusing cannot make the page loop.
  var REFRESH_SPACING_MS = 2000;
  // A tab waits this long for another tab's refresh before asking its own page.
  var SHARED_REFRESH_WAIT_MS = 15000;
  // A login another tab fetched this long before ours expired is still taken.
  var SHARED_SLACK_MS = 2000;
  // Errors no retry can cure: the page's configuration must change.
  var PERMANENT = { invalid_app_key: true, unknown_connection: true, origin_not_allowed: true };
  // The gateway's refusals of an external ref: the ref is dropped, the session goes on.
  var REF_REFUSED = { external_ref_taken: true, invalid_external_ref: true };

  var listeners = {};
  var config = null; // { gateway, appKey, channel, connection, customerId, customerHint, contextProvider }
  // login: "anonymous", "authenticated", or "expired" (the gateway asked
  // for a fresh login and the SDK is getting it).
  var state = {
    status: "idle",
    reason: null,
    sessionId: null,
    conversationId: null,
    authenticated: false,
    login: "anonymous",
    // The desk's id for this chat (its chat or ticket id) that the gateway
    // bound to the session's conversation.
    externalRef: null,
  };
  // A ref the page gave that the gateway has not bound yet: sent with the
  // session's opening, or on its own once the session is open.
  var wantedRef = null;
  var refRetryTimer = null;
  var refRetryMs = BACKOFF_MIN_MS;
  // Who the page said the session's customer is (customerHint or customerId).
  var sessionHint = null;
  var expiredAt = 0;
  var warned = {}; // codes already written to the console, once per page
  var tabs = null; // BroadcastChannel to this page's other tabs
  var sharedLogin = null; // { token, expiresIn, hint, at }: another tab's fresh login
  var sharedPending = 0; // when another tab started to fetch one
  var sharedWaiters = []; // called when that tab is done
  var generation = 0; // bumped by clear(): work started before it is dropped
  var queue = Promise.resolve(); // session changes run one at a time
  var stream = null; // { controller }
  var reconnectTimer = null;
  var backoffMs = BACKOFF_MIN_MS;
  var refreshing = false;
  var refreshTimer = null;
  var lastRefreshAt = 0;
  var refreshCount = 0;
  var refreshFailures = 0;
  // The provider call the SDK is waiting on, if any: { abandon }. A provider
  // that never calls back must not hold up what comes after it for good.
  var pendingAsk = null;
  // Opening failed on the customer's token: the next try asks for a fresh one.
  var openNeedsRefresh = false;

  function emit(name, detail) {
    (listeners[name] || []).slice().forEach(function (fn) {
      try {
        fn(detail);
      } catch (e) {
        // A listener's fault must not stop the SDK; report it asynchronously.
        setTimeout(function () { throw e; });
      }
    });
  }

  function setState(patch) {
    var changed = false;
    Object.keys(patch).forEach(function (k) {
      if (state[k] !== patch[k]) {
        state[k] = patch[k];
        changed = true;
      }
    });
    if (changed) emit("state", getState());
  }

  function getState() {
    return {
      status: state.status,
      reason: state.reason,
      sessionId: state.sessionId,
      conversationId: state.conversationId,
      authenticated: state.authenticated,
      login: state.login,
      externalRef: state.externalRef,
      refreshCount: refreshCount,
    };
  }

  function setLogin(login) {
    setState({ login: login, authenticated: login === "authenticated" });
  }

  function hintOf(c) {
    return c.customerHint || c.customerId || null;
  }

  // --- stored session (survives a reload of the page, not the tab) ---------

  function storageKey() {
    return STORAGE_PREFIX + config.gateway + "|" + config.connection + "|" + config.channel;
  }

  function loadStored() {
    try {
      var raw = global.sessionStorage.getItem(storageKey());
      var s = raw && JSON.parse(raw);
      return s && typeof s.sessionId === "string" ? s : null;
    } catch (e) {
      return null;
    }
  }

  function saveStored() {
    try {
      global.sessionStorage.setItem(
        storageKey(),
        JSON.stringify({
          sessionId: state.sessionId,
          conversationId: state.conversationId,
          // Whether a customer signed in on it, even if the login expired since.
          authenticated: state.login !== "anonymous",
          hint: sessionHint,
          externalRef: state.externalRef,
          pendingRef: wantedRef,
        })
      );
    } catch (e) {
      /* storage may be disabled: the session then lasts as long as the page */
    }
  }

  function forgetStored() {
    try {
      global.sessionStorage.removeItem(storageKey());
    } catch (e) {
      /* nothing stored */
    }
  }

  // --- HTTP -----------------------------------------------------------------

  function GatewayError(status, problem) {
    var slug = (problem && typeof problem.type === "string" && problem.type.split(":").pop()) || "http_" + status;
    this.name = "GatewayError";
    this.status = status;
    this.code = slug;
    this.message = (problem && (problem.detail || problem.title)) || "the gateway answered " + status;
  }
  GatewayError.prototype = Object.create(Error.prototype);

  function networkError() {
    return new GatewayError(0, { type: "urn:deskbridge:problem:network_error", detail: "the gateway could not be reached" });
  }

  function post(path, body) {
    return fetch(config.gateway + path, {
      method: "POST",
      mode: "cors",
      credentials: "omit",
      headers: { "content-type": "application/json", "x-deskbridge-app-key": config.appKey },
      body: JSON.stringify(body),
    }).then(function (res) {
      return res.text().then(function (text) {
        var json = null;
        try {
          json = text ? JSON.parse(text) : null;
        } catch (e) {
          json = null;
        }
        if (!res.ok) throw new GatewayError(res.status, json);
        return json;
      });
    }, function () {
      throw networkError();
    });
  }

  // A browser hides why a cross-origin call failed: a refused origin looks
  // like a gateway that is down. The origin check is open to every origin,
  // so it can tell the two apart.
  function diagnose(err) {
    if (!err || err.code !== "network_error" || !config) return Promise.resolve(err);
    var c = config;
    return fetch(c.gateway + "/v1/channels/" + encodeURIComponent(c.channel) + "/origin", {
      mode: "cors",
      credentials: "omit",
      cache: "no-store",
      headers: { "x-deskbridge-app-key": c.appKey },
    }).then(
      function (res) {
        if (!res.ok) return err;
        return res.json().then(function (check) {
          if (!check || check.allowed !== false) return err;
          var e = new GatewayError(403, { type: "urn:deskbridge:problem:origin_not_allowed" });
          e.origin = typeof check.origin === "string" ? check.origin : null;
          return e;
        });
      },
      function () {
        return err;
      }
    ).catch(function () {
      return err;
    });
  }

  // What the developer must change, for the errors no retry cures.
  function withFix(err) {
    var c = config || {};
    var e = new GatewayError(err.status, { type: "urn:deskbridge:problem:" + err.code });
    if (err.code === "origin_not_allowed") {
      var origin = err.origin || (global.location && global.location.origin) || "this page's origin";
      e.message =
        origin === "null"
          ? "this page has no origin (opened from a file?): serve it over http(s) from an origin in the channel's allowed_origins"
          : "this page's origin " + origin + " may not use channel \"" + c.channel + "\": add \"" + origin +
            "\" to allowed_origins of that channel in the gateway's configuration (with the demo: deskbridge demo --allow-origin " +
            origin + "). Origins match exactly: http://localhost:5173 is not http://127.0.0.1:5173";
    } else if (err.code === "invalid_app_key") {
      e.message = "the gateway refused the appKey for channel \"" + c.channel + "\": check `appKey` and `channel` against the gateway's [[channels]]";
    } else if (err.code === "unknown_connection") {
      e.message = "the gateway has no connection named \"" + c.connection + "\": check `connection`";
    } else {
      e.message = err.message;
    }
    return e;
  }

  // Stops every retry: only load() or setCustomer() starts again. The
  // stored session is kept for that.
  function fail(where, err) {
    var e = withFix(err);
    reset(false);
    setState({ status: "failed", reason: e.code });
    reportError(where, e);
    if (!warned[e.code] && global.console && typeof global.console.warn === "function") {
      warned[e.code] = true;
      global.console.warn("Deskbridge: " + e.message);
    }
  }

  // Reports a failure of this generation's work. Resolves true when the
  // caller should try again; a permanent error ends in the `failed` status.
  function reportFailure(gen, where, err) {
    if (gen !== generation || !err || err.code === "superseded") return Promise.resolve(false);
    return diagnose(err).then(function (e) {
      if (gen !== generation) return false;
      if (PERMANENT[e.code]) {
        fail(where, e);
        return false;
      }
      reportError(where, e);
      return true;
    });
  }

  function reportError(where, err) {
    if (err && err.code === "superseded") return;
    // Never pass a token along: errors carry the gateway's problem only.
    emit("error", {
      where: where,
      code: err && err.code ? err.code : "network_error",
      status: err && err.status ? err.status : 0,
      message: err && err.message ? String(err.message) : "the gateway could not be reached",
    });
  }

  // --- the customer's context -------------------------------------------------

  function noToken(detail) {
    return new GatewayError(0, { type: "urn:deskbridge:problem:no_token", detail: detail });
  }

  function askContext(needsRefresh) {
    var provider = config.contextProvider;
    if (typeof provider !== "function") return Promise.resolve(null);
    return new Promise(function (resolve, reject) {
      var settled = false;
      var mine = {};
      function settle(finish) {
        if (settled) return;
        settled = true;
        if (pendingAsk === mine) pendingAsk = null;
        finish();
      }
      function done(ctx) {
        settle(function () {
          resolve(ctx || null);
        });
      }
      // The page's own error is not passed on: it could hold anything.
      function failed() {
        settle(function () {
          reject(noToken("the contextProvider failed"));
        });
      }
      // Not an error to report: the page replaced the provider, or cleared.
      mine.abandon = function () {
        settle(function () {
          reject(new GatewayError(0, { type: "urn:deskbridge:problem:superseded", detail: "replaced before it answered" }));
        });
      };
      pendingAsk = mine;
      try {
        var returned = provider(done, needsRefresh === true);
        if (returned && typeof returned.then === "function") {
          returned.then(function (ctx) {
            if (ctx !== undefined) done(ctx);
          }, failed);
        }
      } catch (e) {
        failed();
      }
    });
  }

  function abandonAsk() {
    if (pendingAsk) pendingAsk.abandon();
  }

  // --- one refresh for all of the page's tabs --------------------------------
  // Every tab of a customer gets the gateway's authentication_required at
  // once. The first to take the lock asks its page for a fresh login and
  // passes it to the others (same origin, same browser, memory only); they
  // hand it to their own sessions without asking their pages.

  function refreshLockName() {
    return "deskbridge.refresh:" + storageKey();
  }

  function openTabs() {
    closeTabs();
    if (typeof global.BroadcastChannel !== "function") return;
    try {
      tabs = new global.BroadcastChannel(refreshLockName());
    } catch (e) {
      tabs = null;
      return;
    }
    tabs.onmessage = function (m) {
      var d = m && m.data;
      if (!d) return;
      if (d.type === "refreshing") sharedPending = Date.now();
      if (d.type !== "fresh_login") return;
      sharedPending = 0;
      sharedLogin = typeof d.token === "string" ? { token: d.token, expiresIn: d.expiresIn, hint: d.hint || null, at: Date.now() } : null;
      sharedWaiters.splice(0).forEach(function (w) {
        w();
      });
    };
  }

  function closeTabs() {
    if (tabs) tabs.close();
    tabs = null;
    sharedLogin = null;
    sharedPending = 0;
    sharedWaiters.splice(0).forEach(function (w) {
      w();
    });
  }

  // Resolves once another tab's refresh that began after `since` is done
  // (its message may arrive just after its lock is released).
  function sharedSettled(since) {
    if (takeShared(since) || !sharedPending || sharedPending < since - SHARED_SLACK_MS) return Promise.resolve();
    return new Promise(function (resolve) {
      sharedWaiters.push(resolve);
      setTimeout(resolve, SHARED_REFRESH_WAIT_MS);
    });
  }

  function takeShared(since) {
    var s = sharedLogin;
    if (!s || s.at < since - SHARED_SLACK_MS || s.hint !== hintOf(config)) return null;
    return { auth: { token: s.token, expiresIn: s.expiresIn } };
  }

  function freshContext(since) {
    var locks = global.navigator && global.navigator.locks;
    if (!tabs || !locks || typeof locks.request !== "function" || refreshFailures > 0) return askContext(true);
    var channel = tabs;
    var hint = hintOf(config);
    return new Promise(function (resolve, reject) {
      var options = {};
      // A tab whose page never answers must not hold the others up for good.
      if (typeof AbortSignal !== "undefined" && typeof AbortSignal.timeout === "function") {
        options.signal = AbortSignal.timeout(SHARED_REFRESH_WAIT_MS);
      }
      locks
        .request(refreshLockName(), options, function () {
          return sharedSettled(since).then(function () {
            var shared = takeShared(since);
            if (shared) return resolve(shared);
            var tell = function (message) {
              if (channel === tabs) channel.postMessage(message);
            };
            tell({ type: "refreshing" });
            return askContext(true).then(
              function (ctx) {
                var token = ctx && ctx.auth && ctx.auth.token ? String(ctx.auth.token) : null;
                var expiresIn = Number(ctx && ctx.auth && ctx.auth.expiresIn);
                tell({ type: "fresh_login", token: token, expiresIn: isFinite(expiresIn) ? expiresIn : null, hint: hint });
                resolve(ctx);
              },
              function (err) {
                tell({ type: "fresh_login", token: null });
                reject(err);
              }
            );
          });
        })
        .catch(function (e) {
          if (e && e.name === "AbortError") askContext(true).then(resolve, reject);
          else reject(e);
        });
    });
  }

  function authBody(ctx) {
    var body = {};
    if (config.customerId) body.customer_id = String(config.customerId);
    var auth = ctx && ctx.auth;
    if (auth && auth.token) {
      body.auth = { token: String(auth.token) };
      var secs = Math.floor(Number(auth.expiresIn));
      if (isFinite(secs) && secs > 0) body.auth.expires_in = secs;
    }
    return body;
  }

  // --- sessions -----------------------------------------------------------------

  function enqueue(job) {
    var gen = generation;
    var run = queue.then(function () {
      if (gen !== generation) return null;
      return job(gen);
    });
    queue = run.catch(function () {});
    return run;
  }

  // `opened`: a session just opened, with the ref it was opened with (or none).
  function adopt(gen, session, hint, opened) {
    if (gen !== generation || !session) return;
    var moved = session.session_id !== state.sessionId;
    sessionHint = session.authenticated === true ? hint : null;
    if (opened) {
      if (opened.ref && wantedRef === opened.ref) wantedRef = null;
      setState({ externalRef: opened.ref });
    }
    setState({ sessionId: session.session_id, conversationId: session.conversation_id });
    setLogin(session.authenticated === true ? "authenticated" : "anonymous");
    saveStored();
    // A new session, or one whose stream stopped when the SDK failed.
    if (moved || (!stream && !reconnectTimer)) connectStream();
  }

  // The gateway forgot the session: the next one carries the chat's ref again.
  function sessionGone() {
    forgetStored();
    if (!wantedRef) wantedRef = state.externalRef;
    setState({ sessionId: null, conversationId: null, externalRef: null });
  }

  // Another customer than the session's: the session is left, not continued.
  // Its ref stays with its conversation; a ref not yet sent goes to the new one.
  function switchCustomer(gen, reason, ctx) {
    var previous = state.conversationId;
    closeStream();
    forgetStored();
    sessionHint = null;
    setState({ sessionId: null, conversationId: null, externalRef: null });
    setLogin("anonymous");
    emit("identity_changed", { reason: reason, previousConversationId: previous });
    return openSession(gen, ctx);
  }

  function openSession(gen, given) {
    setState({ status: "connecting", reason: null });
    var hint = hintOf(config);
    return (given ? Promise.resolve(given) : askContext(openNeedsRefresh)).then(function (ctx) {
      if (gen !== generation) return null;
      var body = authBody(ctx);
      body.channel = config.channel;
      body.connection = config.connection;
      var ref = wantedRef;
      if (ref) body.external_ref = ref;
      return post("/v1/sessions", body).then(
        function (session) {
          openNeedsRefresh = false;
          adopt(gen, session, hint, { ref: ref });
          if (gen === generation && config.contextProvider && !body.auth) {
            // The chat works anonymously meanwhile; the login is asked for again.
            reportError("open", noToken("the contextProvider gave no token"));
            retryAuthenticate();
          }
          return session;
        },
        function (err) {
          if (gen === generation && ref && REF_REFUSED[err.code]) {
            // The chat goes on without the ref; the page hears why.
            if (wantedRef === ref) wantedRef = null;
            reportError("external_ref", err);
            return openSession(gen, ctx || undefined);
          }
          if (err.code === "customer_token_expired" || err.code === "invalid_customer_token") openNeedsRefresh = true;
          throw err;
        }
      );
    });
  }

  // Binds the ref the page gave to the open session's conversation
  // (POST /v1/sessions/{id}/external-refs). Without a session, the ref
  // waits for the session's opening.
  function bindRef(gen) {
    var ref = wantedRef;
    if (gen !== generation || !ref || !state.sessionId) return Promise.resolve(null);
    if (ref === state.externalRef) {
      wantedRef = null;
      return Promise.resolve(null);
    }
    var sessionId = state.sessionId;
    return post("/v1/sessions/" + encodeURIComponent(sessionId) + "/external-refs", { external_ref: ref }).then(
      function (bound) {
        if (gen !== generation || state.sessionId !== sessionId) return bound;
        if (wantedRef === ref) wantedRef = null;
        refRetryMs = BACKOFF_MIN_MS;
        setState({ externalRef: ref });
        saveStored();
        return bound;
      },
      function (err) {
        if (gen !== generation) throw err;
        if (err.code === "unknown_session") {
          // The gateway forgot the session: a new one opens with the ref.
          sessionGone();
          closeStream();
          setLogin("anonymous");
          return openSession(gen);
        }
        if (REF_REFUSED[err.code] && wantedRef === ref) {
          wantedRef = null;
          saveStored();
        }
        throw err;
      }
    );
  }

  // Binds the waiting ref after what is under way; a refusal reaches the
  // page as an error, a failure that may pass is tried again later.
  function bindWantedRef() {
    var gen = generation;
    return enqueue(bindRef).then(
      function () {},
      function (err) {
        if (gen !== generation) return;
        if (err && REF_REFUSED[err.code]) return reportError("external_ref", err);
        return reportFailure(gen, "external_ref", err).then(function (retry) {
          if (retry) scheduleRefRetry(gen);
        });
      }
    );
  }

  function scheduleRefRetry(gen) {
    if (gen !== generation || refRetryTimer) return;
    var delay = refRetryMs;
    refRetryMs = Math.min(refRetryMs * 2, BACKOFF_MAX_MS);
    refRetryTimer = setTimeout(function () {
      refRetryTimer = null;
      if (gen === generation && wantedRef) bindWantedRef();
    }, delay);
  }

  // Opens a session unless one was opened meanwhile (by a 404 elsewhere).
  function ensureSession(gen) {
    return state.sessionId ? Promise.resolve(null) : openSession(gen);
  }

  function authenticate(gen, needsRefresh) {
    if (!state.sessionId) return openSession(gen);
    var hint = hintOf(config);
    var asked = needsRefresh ? freshContext(expiredAt) : askContext(false);
    return asked.then(function (ctx) {
      if (gen !== generation) return null;
      if (!state.sessionId) return openSession(gen);
      if (!ctx || !ctx.auth || !ctx.auth.token) throw noToken("the contextProvider gave no token");
      return post("/v1/sessions/" + encodeURIComponent(state.sessionId) + "/authenticate", authBody(ctx)).then(
        function (session) {
          adopt(gen, session, hint);
          return session;
        },
        function (err) {
          if (gen !== generation) throw err;
          if (err.status === 404) {
            // The gateway forgot this session: start a new one with the login.
            sessionGone();
            setLogin("anonymous");
            return openSession(gen);
          }
          // The token is another customer's: the page switched customers
          // without clear(). That customer gets a session of their own.
          if (err.code === "identity_mismatch") return switchCustomer(gen, "token", ctx);
          throw err;
        }
      );
    });
  }

  // The gateway asked for a fresh login (authentication_required).
  function refresh() {
    renewLogin(true);
  }

  // The page gave no login when it was asked: ask again later (4 s, 8 s, …).
  function retryAuthenticate() {
    refreshFailures = Math.max(refreshFailures, 1);
    lastRefreshAt = Date.now();
    renewLogin(false);
  }

  // Authenticates the session with a login from the contextProvider, with
  // needsRefresh, and keeps trying (spaced out) until one gets through.
  function renewLogin(needsRefresh) {
    if (!config || typeof config.contextProvider !== "function" || refreshing || refreshTimer) return;
    var wait = lastRefreshAt + REFRESH_SPACING_MS - Date.now();
    if (refreshFailures > 0) {
      wait = Math.max(wait, lastRefreshAt + Math.min(BACKOFF_MIN_MS * Math.pow(2, refreshFailures + 1), BACKOFF_MAX_MS) - Date.now());
    }
    if (wait > 0) {
      refreshTimer = setTimeout(function () {
        refreshTimer = null;
        renewLogin(needsRefresh);
      }, wait);
      return;
    }
    refreshing = true;
    var gen = generation;
    enqueue(function (g) {
      return authenticate(g, needsRefresh);
    })
      .then(
        function (session) {
          refreshFailures = 0;
          if (gen !== generation || !session || !needsRefresh) return false;
          refreshCount += 1;
          emit("refresh", { count: refreshCount, at: new Date(), conversationId: state.conversationId });
          emit("state", getState());
          return false;
        },
        function (err) {
          return reportFailure(gen, needsRefresh ? "refresh" : "authenticate", err).then(function (retry) {
            if (retry) refreshFailures += 1;
            return retry;
          });
        }
      )
      .then(function (retry) {
        if (gen !== generation) return;
        refreshing = false;
        lastRefreshAt = Date.now();
        // Asked once; keep trying (spaced out, see above) until a login gets through.
        if (retry) renewLogin(needsRefresh);
      });
  }

  // --- the session's event stream -------------------------------------------------
  // Read with fetch rather than EventSource: the status tells a forgotten
  // session (404: open a new one) from a gateway that is down (retry).

  function closeStream() {
    if (stream) {
      stream.controller.abort();
      stream = null;
    }
    if (reconnectTimer) {
      clearTimeout(reconnectTimer);
      reconnectTimer = null;
    }
  }

  function scheduleReconnect(gen) {
    if (gen !== generation || reconnectTimer) return;
    setState({ status: "connecting" });
    var delay = Math.round(backoffMs * (0.75 + Math.random() * 0.5));
    backoffMs = Math.min(backoffMs * 2, BACKOFF_MAX_MS);
    reconnectTimer = setTimeout(function () {
      reconnectTimer = null;
      if (gen === generation) connectStream();
    }, delay);
  }

  function connectStream() {
    closeStream();
    if (!state.sessionId) return;
    var gen = generation;
    var sessionId = state.sessionId;
    var controller = new AbortController();
    var mine = { controller: controller };
    stream = mine;
    var current = function () {
      return stream === mine && gen === generation;
    };
    fetch(config.gateway + "/v1/sessions/" + encodeURIComponent(sessionId) + "/events", {
      mode: "cors",
      credentials: "omit",
      headers: { accept: "text/event-stream" },
      cache: "no-store",
      signal: controller.signal,
    })
      .then(function (res) {
        if (!current()) return null;
        if (res.status === 404) {
          stream = null;
          sessionGone();
          setState({ authenticated: false });
          enqueue(ensureSession).catch(function (err) {
            // A superseded open is the replacing call's to make.
            reportFailure(gen, "open", err).then(function (retry) {
              if (retry) scheduleRetryOpen(gen);
            });
          });
          return null;
        }
        if (!res.ok || !res.body) throw new GatewayError(res.status, null);
        backoffMs = BACKOFF_MIN_MS;
        setState({ status: "connected" });
        return readEvents(res.body, current);
      })
      .then(
        function () {
          // The stream ended (gateway restart, proxy timeout): come back.
          if (current()) {
            stream = null;
            scheduleReconnect(gen);
          }
        },
        function (err) {
          if (!current()) return;
          stream = null;
          if (err && err.name === "AbortError") return scheduleReconnect(gen);
          setState({ status: "connecting" });
          reportFailure(gen, "events", err instanceof GatewayError ? err : networkError()).then(function (retry) {
            if (retry) scheduleReconnect(gen);
          });
        }
      );
  }

  function scheduleRetryOpen(gen) {
    if (gen !== generation || reconnectTimer) return;
    setState({ status: "connecting" });
    var delay = backoffMs;
    backoffMs = Math.min(backoffMs * 2, BACKOFF_MAX_MS);
    reconnectTimer = setTimeout(function () {
      reconnectTimer = null;
      if (gen !== generation || state.sessionId) return;
      enqueue(ensureSession).catch(function (err) {
        reportFailure(gen, "open", err).then(function (retry) {
          if (retry) scheduleRetryOpen(gen);
        });
      });
    }, delay);
  }

  function readEvents(body, current) {
    var reader = body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    function pump() {
      return reader.read().then(function (chunk) {
        if (!current()) {
          reader.cancel().catch(function () {});
          return null;
        }
        if (chunk.done) return null;
        buffer += decoder.decode(chunk.value, { stream: true }).replace(/\r\n?/g, "\n");
        var end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          dispatch(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
        return pump();
      });
    }
    return pump();
  }

  function dispatch(block) {
    var name = "message";
    var data = [];
    block.split("\n").forEach(function (line) {
      if (!line || line.charAt(0) === ":") return;
      var i = line.indexOf(":");
      var field = i < 0 ? line : line.slice(0, i);
      var value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
    });
    if (!data.length) return;
    var event;
    try {
      event = JSON.parse(data.join("\n"));
    } catch (e) {
      return;
    }
    var kind = event.kind || name;
    if (kind === "authenticated" && event.session_id === state.sessionId) {
      setState({ conversationId: event.conversation_id || state.conversationId });
      setLogin("authenticated");
      saveStored();
    } else if (kind === "authenticated" && event.conversation_id === state.conversationId && state.login === "expired") {
      // Another tab or app of the customer renewed the conversation's login.
      setLogin("authenticated");
    } else if (event.conversation_id && event.conversation_id !== state.conversationId && event.session_id === state.sessionId) {
      setState({ conversationId: event.conversation_id });
      saveStored();
    }
    emit("event", { kind: kind, conversationId: event.conversation_id || null, sessionId: event.session_id || null });
    if (kind === "authentication_required") {
      if (state.login !== "expired") expiredAt = Date.now();
      setLogin("expired");
      refresh();
    }
  }

  // --- public API -----------------------------------------------------------------

  function requireString(opts, key) {
    if (typeof opts[key] !== "string" || !opts[key]) {
      throw new TypeError("Deskbridge: `" + key + "` is required");
    }
    return opts[key];
  }

  function optionalString(value) {
    return value === undefined || value === null || value === "" ? null : String(value);
  }

  // Why a stored session must not be resumed for this page, if it must not.
  function switchReason(stored) {
    if (!stored.authenticated) return null;
    // The page says nobody is signed in: the signed-in session is not theirs.
    if (!config.contextProvider) return "signed_out";
    var hint = hintOf(config);
    if (hint && stored.hint && hint !== stored.hint) return "hint";
    return null;
  }

  function sameChat(a, b) {
    return (
      a.gateway === b.gateway &&
      a.appKey === b.appKey &&
      a.channel === b.channel &&
      a.connection === b.connection &&
      a.customerId === b.customerId &&
      a.customerHint === b.customerHint &&
      !a.contextProvider === !b.contextProvider
    );
  }

  function load(opts) {
    opts = opts || {};
    var next = {
      gateway: requireString(opts, "gateway").replace(/\/+$/, ""),
      appKey: requireString(opts, "appKey"),
      channel: opts.channel || "web",
      connection: requireString(opts, "connection"),
      customerId: optionalString(opts.customerId),
      customerHint: optionalString(opts.customerHint),
      contextProvider: typeof opts.contextProvider === "function" ? opts.contextProvider : null,
    };
    var givenRef = optionalString(opts.externalRef);
    // The same page mounting twice (React's StrictMode, a router): the
    // session under way goes on, with the newest contextProvider.
    if (config && sameChat(config, next) && state.status !== "failed" && state.status !== "idle") {
      config.contextProvider = next.contextProvider;
      if (givenRef && givenRef !== state.externalRef && givenRef !== wantedRef) setExternalRef(givenRef);
      return;
    }
    if (config) reset(false);
    var gen = generation;
    config = next;
    refreshCount = 0;
    openTabs();
    setState({ status: "connecting", reason: null });
    var stored = loadStored();
    var reason = stored && switchReason(stored);
    if (reason) {
      forgetStored();
      emit("identity_changed", { reason: reason, previousConversationId: stored.conversationId || null });
      stored = null;
    }
    // A ref given before load() (setExternalRef) counts as given to it.
    givenRef = givenRef || wantedRef;
    if (stored) {
      sessionHint = stored.hint || null;
      var storedRef = typeof stored.externalRef === "string" ? stored.externalRef : null;
      var pendingRef = typeof stored.pendingRef === "string" ? stored.pendingRef : null;
      setState({ sessionId: stored.sessionId, conversationId: stored.conversationId || null, externalRef: storedRef });
      setLogin(stored.authenticated === true ? "authenticated" : "anonymous");
      wantedRef = givenRef || pendingRef;
      if (wantedRef === storedRef) wantedRef = null;
      if (config.contextProvider) {
        // The page's current login: it signs in a session opened
        // anonymously, and the gateway tells whether it is still the
        // session's customer (identity_changed if not).
        enqueue(function (g) {
          return authenticate(g, false);
        }).catch(function (err) {
          reportFailure(gen, "authenticate", err).then(function (retry) {
            if (retry && err.code === "no_token") retryAuthenticate();
          });
        });
      }
      if (wantedRef) bindWantedRef();
      connectStream();
      return;
    }
    sessionHint = null;
    wantedRef = givenRef;
    setState({ sessionId: null, conversationId: null, externalRef: null });
    setLogin("anonymous");
    enqueue(openSession).catch(function (err) {
      reportFailure(gen, "open", err).then(function (retry) {
        if (retry) scheduleRetryOpen(gen);
      });
    });
  }

  function setCustomer(opts) {
    if (!config) throw new Error("Deskbridge: call load() before setCustomer()");
    opts = opts || {};
    if (typeof opts.contextProvider !== "function") {
      throw new TypeError("Deskbridge: `contextProvider` is required");
    }
    var failed = state.status === "failed";
    config.customerId = optionalString(opts.customerId);
    config.customerHint = optionalString(opts.customerHint);
    config.contextProvider = opts.contextProvider;
    // A call to the old provider that has not answered is superseded.
    abandonAsk();
    if (failed) setState({ status: "connecting", reason: null });
    var hint = hintOf(config);
    var gen = generation;
    return enqueue(function (g) {
      if (!state.sessionId) return openSession(g);
      // The page names another customer than the session's.
      if (state.login !== "anonymous" && hint && sessionHint && hint !== sessionHint) return switchCustomer(g, "hint");
      return authenticate(g, false);
    })
      .catch(function (err) {
        return reportFailure(gen, "authenticate", err).then(function (retry) {
          if (retry && err && err.code === "no_token") retryAuthenticate();
        });
      })
      .then(function () {
        // A ref the page gave while the SDK had failed.
        if (gen === generation && wantedRef && state.status !== "failed") return bindWantedRef();
      });
  }

  // The desk's id for this chat (the company's chat widget's chat or ticket
  // id): agents and desks find the conversation by it. Bound at once to an
  // open session, else sent when the session opens.
  function setExternalRef(ref) {
    if (typeof ref !== "string" || !ref) throw new TypeError("Deskbridge.setExternalRef: a ref (a non-empty string) is required");
    if (ref === state.externalRef && !wantedRef) return Promise.resolve();
    wantedRef = ref;
    // Before load(): load() sends it. After a failure: load() or setCustomer() does.
    if (!config || state.status === "failed") return Promise.resolve();
    if (state.sessionId) saveStored();
    return bindWantedRef();
  }

  function reset(keepNothing) {
    generation += 1;
    // Work of the old generation is dropped, even a job stuck on a provider
    // that never answers: the new one starts on a queue of its own.
    abandonAsk();
    queue = Promise.resolve();
    openNeedsRefresh = false;
    closeStream();
    if (refreshTimer) {
      clearTimeout(refreshTimer);
      refreshTimer = null;
    }
    refreshing = false;
    refreshFailures = 0;
    lastRefreshAt = 0;
    backoffMs = BACKOFF_MIN_MS;
    if (refRetryTimer) {
      clearTimeout(refRetryTimer);
      refRetryTimer = null;
    }
    refRetryMs = BACKOFF_MIN_MS;
    if (keepNothing && config) forgetStored();
  }

  function clear() {
    reset(true);
    closeTabs();
    config = null;
    refreshCount = 0;
    sessionHint = null;
    wantedRef = null;
    setState({ status: "idle", reason: null, sessionId: null, conversationId: null, externalRef: null });
    setLogin("anonymous");
  }

  // --- actions the customer runs ---------------------------------------------------

  // A random UUID; randomUUID itself exists only in secure contexts.
  function newKey() {
    var c = global.crypto;
    if (c && typeof c.randomUUID === "function") return c.randomUUID();
    var b = c.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    var x = Array.prototype.map.call(b, function (n) { return (n + 0x100).toString(16).slice(1); }).join("");
    return x.slice(0, 8) + "-" + x.slice(8, 12) + "-" + x.slice(12, 16) + "-" + x.slice(16, 20) + "-" + x.slice(20);
  }

  // What run() rejects with: an Error carrying the gateway's problem.
  function runError(status, body, fallback) {
    var problem = (body && typeof body.type === "string" && body.type.split(":").pop()) || fallback || "http_" + status;
    var err = new Error((body && (body.detail || body.title)) || (status ? "the gateway answered " + status : "the gateway could not be reached"));
    err.name = "DeskbridgeError";
    err.problem = problem;
    err.code = problem;
    err.status = status;
    err.errors = body && Array.isArray(body.errors) ? body.errors : [];
    return err;
  }

  // Runs an action the connection allows customers (`callers` has
  // "customer") for the signed-in customer of this session. Resolves with
  // the answer as the customer may see it: { data, meta }.
  function run(action, input, options) {
    if (!config) return Promise.reject(new Error("Deskbridge: call load() before run()"));
    if (typeof action !== "string" || !action) return Promise.reject(new TypeError("Deskbridge.run: an action name is required"));
    options = options || {};
    var gen = generation;
    // After what is under way (opening, signing in): the session it leaves.
    return queue.then(function () {
      if (gen !== generation || !config) throw runError(0, null, "superseded");
      if (!state.sessionId) throw runError(0, null, "no_session");
      // One key per call, unless the page brings its own to retry a write
      // safely; a read ignores it.
      var key = options.idempotencyKey ? String(options.idempotencyKey) : newKey();
      return fetch(config.gateway + "/v1/sessions/" + encodeURIComponent(state.sessionId) + "/actions/" + encodeURIComponent(action), {
        method: "POST",
        mode: "cors",
        credentials: "omit",
        cache: "no-store",
        headers: { "content-type": "application/json", "x-deskbridge-app-key": config.appKey, "idempotency-key": key },
        body: JSON.stringify({ input: input || {} }),
      }).then(
        function (res) {
          return res.text().then(function (text) {
            var json = null;
            try {
              json = text ? JSON.parse(text) : null;
            } catch (e) {
              json = null;
            }
            if (!res.ok) throw runError(res.status, json);
            return json;
          });
        },
        function () {
          throw runError(0, null, "network_error");
        }
      );
    });
  }

  function on(name, fn) {
    if (typeof fn !== "function") throw new TypeError("Deskbridge.on: a function is required");
    (listeners[name] = listeners[name] || []).push(fn);
    return function off() {
      listeners[name] = (listeners[name] || []).filter(function (f) {
        return f !== fn;
      });
    };
  }

  return {
    version: VERSION,
    load: load,
    setCustomer: setCustomer,
    setExternalRef: setExternalRef,
    clear: clear,
    on: on,
    getState: getState,
    run: run,
  };
})(typeof window !== "undefined" ? window : globalThis);
