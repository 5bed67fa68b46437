// Types of the deskbridge web SDK (docs/web-sdk.md). The same API as
// window.Deskbridge in the classic script the gateway serves.

/** What the page's contextProvider hands over: the customer's login. */
export interface CustomerContext {
  auth: {
    /** The customer's token from the company (e.g. its JWT). */
    token: string;
    /** Seconds until it expires: a number, or a numeric string. */
    expiresIn?: number | string;
  };
}

/**
 * Gives the customer's login. `needsRefresh` is true when the gateway asked
 * for a fresh one. Call `callback` once (null: no login now, asked again
 * later), or return a Promise of the context.
 */
export type ContextProvider = (
  callback: (context: CustomerContext | null) => void,
  needsRefresh: boolean,
) => void | Promise<CustomerContext | null | undefined>;

export interface LoadOptions {
  /** The gateway's base URL, e.g. https://deskbridge.example.com */
  gateway: string;
  /** The channel's app key (public: it names the channel). */
  appKey: string;
  /** The channel's name; default "web". */
  channel?: string;
  /** The connection (company backend) the customer belongs to. */
  connection: string;
  /** The customer's identifier, for a connection in opaque identity mode. */
  customerId?: string;
  /** Who the page says is signed in: a stable, opaque id of its user. */
  customerHint?: string;
  /** Without it the session is anonymous. */
  contextProvider?: ContextProvider;
  /**
   * The desk's id for this chat: the chat or ticket id of the company's chat
   * widget. Sent as the session opens (or bound to a resumed session); agents
   * and desks find the conversation by it. See setExternalRef.
   */
  externalRef?: string;
}

export interface CustomerOptions {
  customerId?: string;
  customerHint?: string;
  contextProvider: ContextProvider;
}

export type Status = "idle" | "connecting" | "connected" | "failed";
export type Login = "anonymous" | "authenticated" | "expired";
/** The errors no retry cures: the status is then "failed". */
export type FailureReason = "invalid_app_key" | "unknown_connection" | "origin_not_allowed";

export interface DeskbridgeState {
  status: Status;
  /** With status "failed": why. */
  reason: FailureReason | null;
  sessionId: string | null;
  conversationId: string | null;
  /** login === "authenticated". */
  authenticated: boolean;
  /** "expired": the login expired and a fresh one is being fetched. */
  login: Login;
  /** The external ref the gateway bound to the session's conversation (the latest, if several). */
  externalRef: string | null;
  refreshCount: number;
}

export interface RefreshEvent {
  count: number;
  at: Date;
  conversationId: string | null;
}

export interface IdentityChangedEvent {
  /** "hint": another customerHint; "token": another customer's token; "signed_out": no contextProvider. */
  reason: "hint" | "token" | "signed_out";
  previousConversationId: string | null;
}

export interface GatewayEvent {
  kind: "session_opened" | "authenticated" | "authentication_required" | string;
  conversationId: string | null;
  sessionId: string | null;
}

export interface ErrorEvent {
  /** "external_ref": the ref from load() or setExternalRef() (external_ref_taken, invalid_external_ref, …). */
  where: "open" | "authenticate" | "refresh" | "events" | "external_ref";
  /** The gateway's problem slug, no_token, network_error or http_<status>. */
  code: string;
  /** The HTTP status; 0 without an answer. */
  status: number;
  /** What happened, and for a failed status what to change. Never a token. */
  message: string;
}

export interface EventMap {
  state: DeskbridgeState;
  refresh: RefreshEvent;
  identity_changed: IdentityChangedEvent;
  event: GatewayEvent;
  error: ErrorEvent;
}

/** What run() answers: the company's answer as the customer may see it. */
export interface ActionOutcome<T = unknown> {
  data: T;
  meta: { masked?: string[]; [key: string]: unknown };
}

/** What run() rejects with. */
export interface DeskbridgeError extends Error {
  name: "DeskbridgeError";
  problem: string;
  code: string;
  status: number;
  errors: { field: string; reason: string }[];
}

export interface RunOptions {
  /** To retry a write safely: the same key gives the first outcome again. */
  idempotencyKey?: string;
}

/** The release (the gateway's version). */
export declare const version: string;
export declare function load(options: LoadOptions): void;
export declare function setCustomer(options: CustomerOptions): Promise<void>;
/**
 * Names the session's conversation with the desk's id for this chat (the
 * chat widget's chat or ticket id), once the page learns it. Bound at once on
 * an open session, else sent when it opens; resolves when that is done (or
 * kept for later). A refusal (external_ref_taken, invalid_external_ref) is an
 * `error` event with where "external_ref"; the session goes on without it.
 */
export declare function setExternalRef(ref: string): Promise<void>;
export declare function clear(): void;
/** May be called before load(); returns a function that unsubscribes. */
export declare function on<K extends keyof EventMap>(name: K, listener: (detail: EventMap[K]) => void): () => void;
export declare function getState(): DeskbridgeState;
export declare function run<T = unknown>(action: string, input?: Record<string, unknown>, options?: RunOptions): Promise<ActionOutcome<T>>;

declare const Deskbridge: {
  version: typeof version;
  load: typeof load;
  setCustomer: typeof setCustomer;
  setExternalRef: typeof setExternalRef;
  clear: typeof clear;
  on: typeof on;
  getState: typeof getState;
  run: typeof run;
};
export default Deskbridge;

declare global {
  interface Window {
    Deskbridge: typeof Deskbridge;
  }
}
