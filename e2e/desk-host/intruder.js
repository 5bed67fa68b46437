// Another origin's frame on the desk's page: it reaches the card's window
// through its parent and posts a forged `deskbridge:open` with a valid
// token, as if it were the desk, a few times over two seconds (so the card
// has surely loaded), then says so to the desk. The card must ignore it.
"use strict";
(async () => {
  const cfg = await (await fetch("/config.json", { cache: "no-store" })).json();
  const card = window.parent.frames[0];
  for (let i = 0; i < 10; i++) {
    card.postMessage({ type: "deskbridge:open", token: cfg.token, external_ref: cfg.forged_ref, connection: cfg.connection }, "*");
    await new Promise((r) => setTimeout(r, 200));
  }
  window.parent.postMessage({ type: "intruder:posted" }, "*");
})();
