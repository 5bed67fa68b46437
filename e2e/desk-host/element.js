// The same third-party desk as desk.js, with the card as the gateway's
// custom element, <deskbridge-card> (docs/agent-card.md): no postMessage of
// its own; a ticket sets the element's external-ref, and the card's news
// comes as DOM events.
"use strict";

(async () => {
  const $ = (id) => document.getElementById(id);
  const cfg = await (await fetch("/config.json", { cache: "no-store" })).json();

  // A desk's page would write <script src="https://gw…/sdk/v1/deskbridge-card.js">.
  await new Promise((loaded, failed) => {
    const script = document.createElement("script");
    script.src = `${cfg.gateway}/sdk/v1/deskbridge-card.js`;
    script.onload = loaded;
    script.onerror = () => failed(new Error("the card element did not load"));
    document.head.append(script);
  });

  const card = document.createElement("deskbridge-card");
  card.dataset.testid = "host-card";
  card.setAttribute("gateway", cfg.gateway);
  card.setAttribute("connection", cfg.connection);
  card.token = cfg.token; // a property: the token stays out of the DOM

  function log(text) {
    const li = document.createElement("li");
    li.textContent = text;
    $("log").append(li);
  }

  card.addEventListener("deskbridge:ready", () => log("ready"));
  card.addEventListener("deskbridge:state", (e) => {
    log(JSON.stringify(e.detail));
    $("card-state").textContent = e.detail.state;
    $("card-state").dataset.state = e.detail.state;
    $("card-customer").textContent = e.detail.customer_name || "—";
  });
  card.addEventListener("deskbridge:action", (e) => {
    log(JSON.stringify(e.detail));
    $("card-action").textContent = `${e.detail.action}: ${e.detail.outcome}`;
    $("card-action").dataset.outcome = e.detail.outcome;
  });

  function open(ticket) {
    $("ticket-title").textContent = `${ticket.ref} · ${ticket.subject}`;
    for (const b of document.querySelectorAll("#tickets button")) b.toggleAttribute("aria-current", b.dataset.ref === ticket.ref);
    card.setAttribute("external-ref", ticket.ref);
  }

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

  if (cfg.tickets.length) open(cfg.tickets[0]);
  $("card-slot").append(card);
})();
