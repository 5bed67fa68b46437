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
    // Never pass a token along: errors carry the gateway's problem only.
    emit("error", {
      where: where,
      code: err && err.code ? err.code : "network_error",
      status: err && err.status ? err.status : 0,
      message: err && err.message ? String(err.message) : "the gateway could not be reached",
    });
  }

  // --- the customer's context -------------------------------------------------

  function askContext(needsRefresh) {
    var provider = config.contextProvider;
    if (typeof provider !== "function") return Promise.resolve(null);
    return new Promise(function (resolve, reject) {
      var settled = false;
      function done(ctx) {
        if (settled) return;
        settled = true;
        resolve(ctx || null);
      }
      try {
        var returned = provider(done, needsRefresh === true);
        if (returned && typeof returned.then === "function") {
          returned.then(function (ctx) {
            if (ctx !== undefined) done(ctx);
          }, function (e) {
            if (!settled) {
              settled = true;
              reject(e);
            }
          });
        }
      } catch (e) {
        settled = true;
        reject(e);
      }
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
    return askContext(false).then(function (ctx) {
      if (gen !== generation) return null;
      var body = authBody(ctx);
      body.channel = config.channel;
      body.connection = config.connection;
      return post("/v1/sessions", body).then(function (session) {
        adopt(gen, session);
        return session;
      });
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
      if (!ctx || !ctx.auth || !ctx.auth.token) {
        throw new GatewayError(0, { type: "urn:deskbridge:problem:no_token", detail: "the contextProvider gave no token" });
      }
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
    if (!config || typeof config.contextProvider !== "function" || refreshing || refreshTimer) return;
    var wait = lastRefreshAt + REFRESH_SPACING_MS - Date.now();
    if (wait > 0) {
      refreshTimer = setTimeout(function () {
        refreshTimer = null;
        refresh();
      }, wait);
      return;
    }
    refreshing = true;
    var gen = generation;
    enqueue(function (g) {
      return authenticate(g, true);
    })
      .then(function (session) {
        if (gen !== generation || !session) return;
        refreshCount += 1;
        emit("refresh", { count: refreshCount, at: new Date(), conversationId: state.conversationId });
        emit("state", getState());
      })
      .then(
        function () {
          refreshFailures = 0;
        },
        function (err) {
          if (gen !== generation) return;
          reportError("refresh", err);
          refreshFailures += 1;
        }
      )
      .then(function () {
        if (gen !== generation) return;
        refreshing = false;
        lastRefreshAt = Date.now();
        if (refreshFailures > 0) {
          // The gateway asked once; keep trying until a fresh login gets through.
          var delay = Math.min(BACKOFF_MIN_MS * Math.pow(2, refreshFailures + 1), BACKOFF_MAX_MS);
          refreshTimer = setTimeout(function () {
            refreshTimer = null;
            refresh();
          }, delay);
        }
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
          reportError("authenticate", err);
        });
      }
      connectStream();
      return;
    }
    enqueue(openSession).catch(function (err) {
      reportError("open", err);
      scheduleRetryOpen(generation);
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
    return enqueue(function (gen) {
      return state.sessionId ? authenticate(gen, false) : openSession(gen);
    }).catch(function (err) {
      reportError("authenticate", err);
    });
  }

  function reset(keepNothing) {
    generation += 1;
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
  };
})(window);
