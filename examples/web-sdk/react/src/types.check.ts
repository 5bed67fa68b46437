// Not shipped: `npm run check-types` compiles it against the package's
// deskbridge.d.ts, so the types say what the SDK does (docs/web-sdk.md).
import Deskbridge, { on, type ContextProvider, type DeskbridgeState, type LoadOptions } from '@deskbridge/web-sdk';

const contextProvider: ContextProvider = (callback) => {
  fetch('/fresh-token', { method: 'POST' })
    .then((r) => r.json())
    .then((t: { JWT: string; expires_in: string }) => callback({ auth: { token: t.JWT, expiresIn: Number(t.expires_in) } }))
    .catch(() => callback(null));
};
const options: LoadOptions = { gateway: 'https://deskbridge.example.com', appKey: 'dbw_x', connection: 'acme', customerHint: 'u1', contextProvider, externalRef: 'HD-1' };
Deskbridge.load(options);
const off = on('state', (s: DeskbridgeState) => {
  const expired: boolean = s.login === 'expired' && !s.authenticated;
  const failed: boolean = s.status === 'failed' && s.reason === 'origin_not_allowed';
  return expired || failed;
});
Deskbridge.on('identity_changed', (e) => e.reason === 'hint' && e.previousConversationId);
Deskbridge.on('error', (e) => e.code.length + e.status + (e.where === 'external_ref' ? 1 : 0));
void Deskbridge.setExternalRef('zd-48213').then(() => Deskbridge.getState().externalRef?.length);
off();
const version: string = Deskbridge.version;
void Deskbridge.setCustomer({ customerHint: version, contextProvider }).then(() => Deskbridge.getState().refreshCount);
void Deskbridge.run<{ transactions: unknown[] }>('gettransactions', { account_id: 'acc-1001' }).then((r) => r.data.transactions);
window.Deskbridge.clear();
// @ts-expect-error: connection and appKey are required
Deskbridge.load({ gateway: 'https://deskbridge.example.com' });
// @ts-expect-error: no such event
Deskbridge.on('nope', () => {});
