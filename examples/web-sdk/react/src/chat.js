// The deskbridge chat for the whole app: one SDK, subscribed once at module
// load (on() may come before load()), its state as a React hook.
import Deskbridge from '@deskbridge/web-sdk';
import { useEffect, useSyncExternalStore } from 'react';

let snapshot = Deskbridge.getState();
const subscribers = new Set();
Deskbridge.on('state', (state) => {
  snapshot = state;
  subscribers.forEach((notify) => notify());
});
// What the browser tests read.
window.example = { errors: [], identityChanges: [], loads: 0 };
Deskbridge.on('error', (e) => window.example.errors.push(`${e.where}:${e.code}`));
Deskbridge.on('identity_changed', (e) => window.example.identityChanges.push(e.reason));

export function useChatState() {
  return useSyncExternalStore(
    (notify) => {
      subscribers.add(notify);
      return () => subscribers.delete(notify);
    },
    () => snapshot,
  );
}

// The customer's login from this site's server (its fresh-token endpoint).
function contextProvider(callback) {
  fetch('/fresh-token', { method: 'POST', credentials: 'same-origin' })
    .then((r) => (r.ok ? r.json() : Promise.reject(new Error(String(r.status)))))
    .then((t) => callback({ auth: { token: t.JWT, expiresIn: Number(t.expires_in) } }))
    .catch(() => callback(null));
}

/**
 * Keeps the chat loaded for `me` (null: anonymous) while the app is mounted.
 * No clear() on unmount: StrictMode unmounts and mounts again, and leaving
 * a route is not signing out. Sign-out calls signOut() below.
 */
export function useChat(config, me) {
  const hint = me ? me.hint : null;
  useEffect(() => {
    if (!config) return;
    window.example.loads += 1;
    Deskbridge.load({ ...config, ...(hint ? { customerHint: hint, contextProvider } : {}) });
  }, [config, hint]);
}

export function signOut() {
  Deskbridge.clear();
}
