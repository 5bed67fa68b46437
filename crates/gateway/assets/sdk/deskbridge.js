/*! deskbridge web SDK: hands the customer's login from a company's page to the
 * deskbridge gateway, and hands a fresh one whenever the gateway asks for it.
 * No dependencies; exposes window.Deskbridge. Documented in docs/web-sdk.md. */
(function (global) {
  "use strict";

  var VERSION = "1";
  var STORAGE_PREFIX = "deskbridge.session:";
  var BACKOFF_MIN_MS = 1000;
  var BACKOFF_MAX_MS = 30000;
  // Two refreshes closer than this are spaced out, so a token the gateway
  // keeps refusing cannot make the page loop.
  var REFRESH_SPACING_MS = 2000;

  var listeners = {};
  var config = null; // { gateway, appKey, channel, connection, customerId, contextProvider }
  var state = { status: "idle", sessionId: null, conversationId: null, authenticated: false };
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
      sessionId: state.sessionId,
      conversationId: state.conversationId,
      authenticated: state.authenticated,
      refreshCount: refreshCount,
    };
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
          authenticated: state.authenticated,
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

  function adopt(gen, session) {
    if (gen !== generation || !session) return;
    var moved = session.session_id !== state.sessionId;
    setState({
      sessionId: session.session_id,
      conversationId: session.conversation_id,
      authenticated: session.authenticated === true,
    });
    saveStored();
    if (moved) connectStream();
  }

  function openSession(gen) {
    setState({ status: "connecting" });
    return askContext(openNeedsRefresh).then(function (ctx) {
      if (gen !== generation) return null;
      var body = authBody(ctx);
      body.channel = config.channel;
      body.connection = config.connection;
      return post("/v1/sessions", body).then(
        function (session) {
          openNeedsRefresh = false;
          adopt(gen, session);
          if (gen === generation && config.contextProvider && !body.auth) {
            // The chat works anonymously meanwhile; the login is asked for again.
            reportError("open", noToken("the contextProvider gave no token"));
            retryAuthenticate();
          }
          return session;
        },
        function (err) {
          if (err.code === "customer_token_expired" || err.code === "invalid_customer_token") openNeedsRefresh = true;
          throw err;
        }
      );
    });
  }

  // Opens a session unless one was opened meanwhile (by a 404 elsewhere).
  function ensureSession(gen) {
    return state.sessionId ? Promise.resolve(null) : openSession(gen);
  }

  function authenticate(gen, needsRefresh) {
    if (!state.sessionId) return openSession(gen);
    return askContext(needsRefresh).then(function (ctx) {
      if (gen !== generation) return null;
      if (!state.sessionId) return openSession(gen);
      if (!ctx || !ctx.auth || !ctx.auth.token) throw noToken("the contextProvider gave no token");
      return post("/v1/sessions/" + encodeURIComponent(state.sessionId) + "/authenticate", authBody(ctx)).then(
        function (session) {
          adopt(gen, session);
          return session;
        },
        function (err) {
          if (err.status === 404 && gen === generation) {
            // The gateway forgot this session: start a new one with the login.
            forgetStored();
            setState({ sessionId: null, conversationId: null, authenticated: false });
            return openSession(gen);
          }
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
      .then(function (session) {
        if (gen !== generation || !session || !needsRefresh) return;
        refreshCount += 1;
        emit("refresh", { count: refreshCount, at: new Date(), conversationId: state.conversationId });
        emit("state", getState());
      })
      .then(
        function () {
          refreshFailures = 0;
        },
        function (err) {
          if (gen !== generation || err.code === "superseded") return;
          reportError(needsRefresh ? "refresh" : "authenticate", err);
          refreshFailures += 1;
        }
      )
      .then(function () {
        if (gen !== generation) return;
        refreshing = false;
        lastRefreshAt = Date.now();
        // Asked once; keep trying (spaced out, see above) until a login gets through.
        if (refreshFailures > 0) renewLogin(needsRefresh);
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
          forgetStored();
          stream = null;
          setState({ sessionId: null, conversationId: null, authenticated: false });
          enqueue(ensureSession).catch(function (err) {
            if (err.code === "superseded") return; // the replacing call opens it
            reportError("open", err);
            scheduleRetryOpen(gen);
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
          if (err && err.name !== "AbortError") reportError("events", err);
          scheduleReconnect(gen);
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
        if (err.code === "superseded") return;
        reportError("open", err);
        scheduleRetryOpen(gen);
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
      setState({ authenticated: true, conversationId: event.conversation_id || state.conversationId });
      saveStored();
    } else if (event.conversation_id && event.conversation_id !== state.conversationId && event.session_id === state.sessionId) {
      setState({ conversationId: event.conversation_id });
      saveStored();
    }
    emit("event", { kind: kind, conversationId: event.conversation_id || null, sessionId: event.session_id || null });
    if (kind === "authentication_required") refresh();
  }

  // --- public API -----------------------------------------------------------------

  function requireString(opts, key) {
    if (typeof opts[key] !== "string" || !opts[key]) {
      throw new TypeError("Deskbridge: `" + key + "` is required");
    }
    return opts[key];
  }

  function load(opts) {
    opts = opts || {};
    var next = {
      gateway: requireString(opts, "gateway").replace(/\/+$/, ""),
      appKey: requireString(opts, "appKey"),
      channel: opts.channel || "web",
      connection: requireString(opts, "connection"),
      customerId: opts.customerId || null,
      contextProvider: typeof opts.contextProvider === "function" ? opts.contextProvider : null,
    };
    if (config) reset(false);
    var gen = generation;
    config = next;
    refreshCount = 0;
    var stored = loadStored();
    if (stored) {
      setState({
        status: "connecting",
        sessionId: stored.sessionId,
        conversationId: stored.conversationId || null,
        authenticated: stored.authenticated === true,
      });
      if (config.contextProvider && !stored.authenticated) {
        // Signed in since this session was opened anonymously.
        enqueue(function (gen) {
          return authenticate(gen, false);
        }).catch(function (err) {
          if (gen !== generation) return;
          reportError("authenticate", err);
          if (err && err.code === "no_token") retryAuthenticate();
        });
      }
      connectStream();
      return;
    }
    enqueue(openSession).catch(function (err) {
      if (gen !== generation || err.code === "superseded") return;
      reportError("open", err);
      scheduleRetryOpen(gen);
    });
  }

  function setCustomer(opts) {
    if (!config) throw new Error("Deskbridge: call load() before setCustomer()");
    opts = opts || {};
    if (typeof opts.contextProvider !== "function") {
      throw new TypeError("Deskbridge: `contextProvider` is required");
    }
    config.customerId = opts.customerId || null;
    config.contextProvider = opts.contextProvider;
    // A call to the old provider that has not answered is superseded.
    abandonAsk();
    var gen = generation;
    return enqueue(function (g) {
      return state.sessionId ? authenticate(g, false) : openSession(g);
    }).catch(function (err) {
      if (gen !== generation) return;
      reportError("authenticate", err);
      if (err && err.code === "no_token") retryAuthenticate();
    });
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
    if (keepNothing && config) forgetStored();
  }

  function clear() {
    reset(true);
    config = null;
    refreshCount = 0;
    setState({ status: "idle", sessionId: null, conversationId: null, authenticated: false });
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

  global.Deskbridge = {
    version: VERSION,
    load: load,
    setCustomer: setCustomer,
    clear: clear,
    on: on,
    getState: getState,
    run: run,
  };
})(window);
