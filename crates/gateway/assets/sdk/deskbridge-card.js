/*! <deskbridge-card>: the deskbridge customer card as a custom element, for
 * a desk's sidebar. It frames the gateway's /card and speaks its postMessage
 * contract (docs/agent-card.md) for the page:
 *
 *   <deskbridge-card gateway="https://gw.example.com" external-ref="HD-1001"
 *                    connection="acme"></deskbridge-card>
 *   card.token = agentToken;  // or the token="…" attribute
 *
 * Changing external-ref, token or connection opens the card again; the card's
 * messages come out as DOM events on the element: deskbridge:ready,
 * deskbridge:state and deskbridge:action (detail: the card's message).
 * No dependencies. */
(function (global) {
  "use strict";

  var NAME = "deskbridge-card";
  if (!global.customElements || global.customElements.get(NAME)) return;

  var MIN_HEIGHT = 200;
  var MAX_HEIGHT = 4000;

  function originOf(url) {
    try {
      return new URL(url).origin;
    } catch (e) {
      return null;
    }
  }

  class DeskbridgeCard extends global.HTMLElement {
    static get observedAttributes() {
      return ["gateway", "external-ref", "token", "connection"];
    }

    #frame = null;
    #origin = null;
    #ready = false;
    #token = null; // set as a property: kept out of the DOM
    #sentToken = null;
    #state = null;
    #reopening = false;
    #onMessage = (e) => this.#message(e);

    constructor() {
      super();
      const root = this.attachShadow({ mode: "open" });
      const style = document.createElement("style");
      style.textContent = ":host{display:block}iframe{display:block;width:100%;height:600px;border:0}";
      root.append(style);
    }

    /** The agent token. As a property it stays out of the DOM (and of
     * anything that serializes it); the attribute is for server-written markup. */
    get token() {
      return this.#token || this.getAttribute("token");
    }
    set token(value) {
      this.#token = value === null || value === undefined || value === "" ? null : String(value);
      this.#reopen();
    }

    get externalRef() {
      return this.getAttribute("external-ref");
    }
    set externalRef(value) {
      this.#reflect("external-ref", value);
    }

    get gateway() {
      return this.getAttribute("gateway");
    }
    set gateway(value) {
      this.#reflect("gateway", value);
    }

    get connection() {
      return this.getAttribute("connection");
    }
    set connection(value) {
      this.#reflect("connection", value);
    }

    /** The card's last deskbridge:state message, or null. */
    get state() {
      return this.#state;
    }

    connectedCallback() {
      global.addEventListener("message", this.#onMessage);
      this.#frameUp();
    }

    disconnectedCallback() {
      global.removeEventListener("message", this.#onMessage);
      this.#frameDown();
    }

    attributeChangedCallback(name, previous, value) {
      if (previous === value || !this.isConnected) return;
      if (name === "gateway") {
        this.#frameDown();
        this.#frameUp();
      } else {
        this.#reopen();
      }
    }

    #reflect(name, value) {
      if (value === null || value === undefined || value === "") this.removeAttribute(name);
      else this.setAttribute(name, String(value));
    }

    // The card page for this page's origin: the gateway serves it only to a
    // desk origin in its card_origins, and the browser shows it only here.
    #frameUp() {
      const gateway = (this.getAttribute("gateway") || "").replace(/\/+$/, "");
      this.#origin = originOf(gateway);
      if (!this.#origin) return;
      const frame = document.createElement("iframe");
      frame.title = this.getAttribute("title") || "Customer (deskbridge)";
      frame.setAttribute("part", "frame");
      frame.src = `${gateway}/card?host=${encodeURIComponent(global.location.origin)}`;
      this.#frame = frame;
      this.shadowRoot.append(frame);
    }

    #frameDown() {
      if (this.#frame) this.#frame.remove();
      this.#frame = null;
      this.#ready = false;
      this.#sentToken = null;
      this.#state = null;
    }

    // Several changes in one task (a ref and a token) open the card once.
    #reopen() {
      if (this.#reopening) return;
      this.#reopening = true;
      queueMicrotask(() => {
        this.#reopening = false;
        this.#open();
      });
    }

    #post(message) {
      // To the gateway's origin only: the token goes nowhere else.
      this.#frame.contentWindow.postMessage(message, this.#origin);
    }

    #open() {
      if (!this.#ready || !this.#frame || !this.#frame.contentWindow) return;
      const token = this.token;
      // The token was taken away: the card forgets it.
      if (this.#sentToken && !token) this.#post({ type: "deskbridge:sign-out" });
      this.#sentToken = token;
      const ref = this.getAttribute("external-ref");
      if (!ref) return;
      const message = { type: "deskbridge:open", external_ref: ref };
      if (token) message.token = token;
      const connection = this.getAttribute("connection");
      if (connection) message.connection = connection;
      this.#post(message);
    }

    #message(e) {
      // Only this element's card, from the gateway's origin.
      if (!this.#frame || e.source !== this.#frame.contentWindow || e.origin !== this.#origin) return;
      const m = e.data;
      if (!m || typeof m.type !== "string") return;
      if (m.type === "deskbridge:resize") {
        const height = Number(m.height);
        if (Number.isFinite(height)) this.#frame.style.height = `${Math.max(MIN_HEIGHT, Math.min(height, MAX_HEIGHT))}px`;
        return;
      }
      if (m.type === "deskbridge:ready") {
        this.#ready = true;
        this.#open();
      } else if (m.type === "deskbridge:state") {
        this.#state = m;
      } else if (m.type !== "deskbridge:action") {
        return;
      }
      this.dispatchEvent(new CustomEvent(m.type, { detail: m, bubbles: true }));
    }
  }

  global.customElements.define(NAME, DeskbridgeCard);
})(typeof window !== "undefined" ? window : globalThis);
