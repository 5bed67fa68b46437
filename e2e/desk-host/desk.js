// A third-party desk hosting the deskbridge customer card in its sidebar,
// by the postMessage contract of docs/agent-card.md. Its backend (the test
// harness) hands it the gateway's address, the agent's token and its
// tickets at /config.json; the ticket ids are the card's external_ref.
"use strict";

(async () => {
  const $ = (id) => document.getElementById(id);
  const cfg = await (await fetch("/config.json", { cache: "no-store" })).json();
  const params = new URLSearchParams(location.search);
  const gatewayOrigin = new URL(cfg.gateway).origin;
  // `?host=` may name another origin than this page's (a lying desk): the
  // gateway's frame-ancestors then keeps the card from loading at all.
  const claimed = params.get("claim") || location.origin;

  const frame = document.createElement("iframe");
  frame.title = "Customer (deskbridge)";
  frame.dataset.testid = "host-card-frame";
  frame.src = `${cfg.gateway}/card?host=${encodeURIComponent(claimed)}`;
  $("card-slot").append(frame);

  let ready = false;
  let current = null;

  function log(text) {
    const li = document.createElement("li");
    li.textContent = text;
    $("log").append(li);
  }

  function open(ticket) {
    current = ticket;
    $("ticket-title").textContent = `${ticket.ref} · ${ticket.subject}`;
    for (const b of document.querySelectorAll("#tickets button")) b.toggleAttribute("aria-current", b.dataset.ref === ticket.ref);
    if (!ready) return;
    // To the gateway's origin only: the token goes nowhere else.
    frame.contentWindow.postMessage({ type: "deskbridge:open", token: cfg.token, external_ref: ticket.ref, connection: cfg.connection }, gatewayOrigin);
  }

  let intruder = null;
  window.addEventListener("message", (e) => {
    // The intruder's word that it posted (the test waits on it); nothing more.
    if (intruder && e.source === intruder.contentWindow && e.data && e.data.type === "intruder:posted") {
      document.body.dataset.intruder = "posted";
      return;
    }
    // Only the card, from the gateway's origin.
    if (e.source !== frame.contentWindow || e.origin !== gatewayOrigin) return;
    const m = e.data || {};
    log(JSON.stringify(m));
    if (m.type === "deskbridge:ready") {
      ready = true;
      if (current) open(current);
    } else if (m.type === "deskbridge:state") {
      $("card-state").textContent = m.state;
      $("card-state").dataset.state = m.state;
      $("card-customer").textContent = m.customer_name || "—";
    } else if (m.type === "deskbridge:action") {
      $("card-action").textContent = `${m.action}: ${m.outcome}`;
      $("card-action").dataset.outcome = m.outcome;
    } else if (m.type === "deskbridge:resize") {
      frame.style.height = `${Math.max(200, Math.min(m.height, 4000))}px`;
    }
  });

  for (const ticket of cfg.tickets) {
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.ref = ticket.ref;
    b.dataset.testid = "host-ticket";
    b.textContent = `${ticket.ref} · ${ticket.subject}`;
    b.addEventListener("click", () => open(ticket));
    const li = document.createElement("li");
    li.append(b);
    $("tickets").append(li);
  }

  // A page of another origin framed beside the card, which tries to drive it.
  if (params.get("intruder")) {
    intruder = document.createElement("iframe");
    intruder.src = params.get("intruder");
    intruder.dataset.testid = "host-intruder";
    intruder.style.display = "none";
    $("intruder-slot").append(intruder);
  }
  if (params.get("open") !== "0" && cfg.tickets.length) open(cfg.tickets[0]);
})();
