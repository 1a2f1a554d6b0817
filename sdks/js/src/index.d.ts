// Type declarations for @backpack-baas/sdk (src/index.js).

export declare const VERSION: string;

/** A JSON object stored in a collection. */
export type Document = { [field: string]: unknown };

/** A record: your document plus the system fields. */
export type BackpackRecord<T extends object = Document> = T & {
  id: string;
  created: string;
  updated: string;
  owner: string | null;
  version: number;
  expand?: { [field: string]: BackpackRecord | BackpackRecord[] | null };
};

export interface User {
  id: string;
  email: string;
  verified: boolean;
  role: string;
  data: Document;
  created: string;
  updated: string;
  version?: number;
}

export interface FileInfo {
  id: string;
  name: string;
  size: number;
  type: string;
  bucket: string;
  owner: string | null;
  public: boolean;
  sha256: string;
  created: string;
  updated: string;
  version?: number;
}

/** A filter in MongoDB's query syntax (see docs/filters.md). */
export type Filter = { [pathOrOperator: string]: unknown };

export interface ListOptions {
  filter?: Filter | string;
  /** "-created,title" or ["-created", "title"] */
  sort?: string | string[];
  /** 1..1000, default 50 */
  limit?: number;
  /** the `next` cursor of the previous page */
  after?: string | null;
  offset?: number;
  fields?: string | string[];
  expand?: string | string[];
  /** adds `total` */
  count?: boolean;
}

export interface Page<T> {
  items: T[];
  next: string | null;
  total?: number;
}

/** A version number, a record (its `version`), or an ETag such as '"3"' or "*". */
export type IfMatch = number | string | { version: number };

export interface WriteOptions {
  ifMatch?: IfMatch;
}

export type ChangeEvent<T extends object = Document> =
  | { action: "create" | "update" | "delete"; record: BackpackRecord<T> }
  | { action: "resync" }
  | { action: "error"; error: BackpackError };

export type Unsubscribe = () => void;

/** Returned by subscribe(): call it to unsubscribe. */
export interface Subscription {
  (): void;
  /** Resolves when the server acknowledges the subscription; rejects with its refusal. */
  ready: Promise<void>;
}

export declare class BackpackError extends Error {
  constructor(init?: {
    status?: number;
    code?: string;
    message?: string;
    details?: { [key: string]: unknown };
    requestId?: string | null;
    retryAfter?: number | null;
    cause?: unknown;
  });
  /** HTTP status; 0 when the server could not be reached. */
  status: number;
  /** "not_found", "conflict", "validation_failed", …; "network_error" / "bad_response" from the SDK. */
  code: string;
  details: { [key: string]: unknown };
  /** The response's X-Request-Id (or details.request_id). */
  requestId: string | null;
  /** Seconds, from Retry-After (429). */
  retryAfter: number | null;
}

/** localStorage-like. */
export interface TokenStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  onclose: ((event: { code?: number; reason?: string }) => void) | null;
}

export interface ClientOptions {
  /** Where the session is kept; default localStorage in browsers, memory in Node. */
  storage?: TokenStorage;
  /** Storage key; default "backpack:" + baseUrl. */
  storageKey?: string;
  /** A token to use (a session, or a secret key on a server); kept in memory only. */
  token?: string;
  fetch?: typeof fetch;
  /** A WebSocket class, e.g. `import WebSocket from "ws"` in Node < 22. Default: globalThis.WebSocket. */
  WebSocket?: new (url: string) => WebSocketLike;
  realtime?: {
    /** Reconnect backoff, ms (defaults 250 and 10000). */
    minDelay?: number;
    maxDelay?: number;
    /** Keep-alive ping interval, ms (default 25000). */
    pingInterval?: number;
  };
}

export interface RequestOptions {
  query?: { [name: string]: string | number | boolean | undefined | null };
  body?: unknown;
  headers?: { [name: string]: string };
  form?: FormData;
  auth?: boolean;
  raw?: boolean;
}

export declare class Collection<T extends object = Document> {
  readonly name: string;
  list(options?: ListOptions): Promise<Page<BackpackRecord<T>>>;
  /** Every record over all pages (follows `next`). */
  iterate(options?: ListOptions): AsyncGenerator<BackpackRecord<T>, void, undefined>;
  get(id: string, options?: { fields?: string | string[]; expand?: string | string[] }): Promise<BackpackRecord<T>>;
  create(data: Partial<T> & { id?: string }): Promise<BackpackRecord<T>>;
  /** JSON merge patch (RFC 7386): null removes a field. */
  update(id: string, patch: { [K in keyof T]?: T[K] | null } | Document, options?: WriteOptions): Promise<BackpackRecord<T>>;
  replace(id: string, data: T | Document, options?: WriteOptions): Promise<BackpackRecord<T>>;
  delete(id: string, options?: WriteOptions): Promise<void>;
  subscribe(callback: (event: ChangeEvent<T>) => void): Subscription;
  subscribe(filter: Filter | null | undefined, callback: (event: ChangeEvent<T>) => void): Subscription;
}

export type BatchResult = BackpackRecord | { id: string; deleted: true };

export declare class Batch {
  readonly ops: Array<{ op: string; collection: string; id?: string; data?: Document; if_match?: number }>;
  create(collection: string, data: Document): this;
  update(collection: string, id: string, patch: Document, options?: WriteOptions): this;
  replace(collection: string, id: string, data: Document, options?: WriteOptions): this;
  delete(collection: string, id: string, options?: WriteOptions): this;
  /** All or nothing, in one transaction. */
  commit(): Promise<BatchResult[]>;
}

export declare class Auth {
  readonly user: User | null;
  readonly token: string | null;
  signup(email: string, password: string, data?: Document): Promise<User>;
  signup(credentials: { email: string; password: string; data?: Document }): Promise<User>;
  login(email: string, password: string): Promise<User>;
  login(credentials: { email: string; password: string }): Promise<User>;
  logout(): Promise<void>;
  me(): Promise<User>;
  update(changes: { data?: Document; email?: string; password?: string; current_password?: string }): Promise<User>;
  requestPasswordReset(email: string): Promise<void>;
  confirmPasswordReset(token: string, password: string): Promise<void>;
  requestVerification(): Promise<void>;
  confirmVerification(token: string): Promise<void>;
  providers(): Promise<Array<{ name: string; type: string }>>;
  oauthUrl(provider: string, options?: { redirect?: string }): string;
  /** Sends the browser to the provider (location.assign); returns the URL. */
  loginWithOAuth(provider: string, options?: { redirect?: string }): string;
  /** Reads #token= from location.hash (or `href`), signs in and removes it from the address bar. */
  handleOAuthRedirect(href?: string): Promise<User | null>;
  /** Uses a session token obtained elsewhere (null signs out locally). */
  setToken(token: string | null): Promise<User | null>;
  sessions(): Promise<Array<{ id: string; created: string; last_seen: string; expires: string; user_agent: string; ip: string; current: boolean }>>;
  revokeSession(id: string): Promise<void>;
  /** Fires on sign-in, sign-out (including a 401 on an expired session), profile changes and other tabs' changes. */
  onChange(callback: (user: User | null, token: string | null) => void): Unsubscribe;
}

export interface UploadProgress {
  loaded: number;
  total: number;
  percent: number;
}

export interface UploadOptions {
  bucket?: string;
  name?: string;
  public?: boolean;
  onProgress?: (progress: UploadProgress) => void;
}

export declare class Files {
  upload(data: Blob | ArrayBuffer | ArrayBufferView | string, options?: UploadOptions): Promise<FileInfo>;
  get(id: string): Promise<FileInfo>;
  list(options?: ListOptions & { bucket?: string }): Promise<Page<FileInfo>>;
  iterate(options?: ListOptions & { bucket?: string }): AsyncGenerator<FileInfo, void, undefined>;
  update(id: string, changes: { name?: string; bucket?: string; public?: boolean }, options?: WriteOptions): Promise<FileInfo>;
  /** The content URL; works for public files, or with the session cookie. thumb: "WxH", "Wx0", "0xH", "WxHf". */
  url(id: string, options?: { thumb?: string; download?: boolean }): string;
  /** A URL that serves the content without credentials until it expires. */
  signedUrl(id: string, options?: { expiresIn?: number; thumb?: string; download?: boolean }): Promise<string>;
  /** The content as a fetch Response, authenticated with the current token. */
  download(id: string, options?: { thumb?: string; range?: string }): Promise<Response>;
  delete(id: string, options?: WriteOptions): Promise<void>;
  subscribe(callback: (event: ChangeEvent<FileInfo>) => void): Subscription;
  subscribe(options: { bucket?: string; filter?: Filter }, callback: (event: ChangeEvent<FileInfo>) => void): Subscription;
}

export interface PresenceEvent {
  /** connection id → presence */
  state: { [connectionId: string]: Document };
  joins: { [connectionId: string]: Document };
  leaves: { [connectionId: string]: Document };
}

export declare class Channel {
  readonly name: string;
  readonly joined: boolean;
  /** The last presence state received. */
  readonly state: { [connectionId: string]: Document };
  /** Joins (and re-joins after every reconnect). */
  join(presence?: Document): this;
  leave(): void;
  broadcast(event: string, data?: unknown): void;
  /** event "*" receives every event. */
  on(event: string, callback: (data: unknown, meta: { event: string; from: string | null; channel: string }) => void): Unsubscribe;
  onPresence(callback: (event: PresenceEvent) => void): Unsubscribe;
}

export declare class Realtime {
  readonly connected: boolean;
  readonly user: User | null;
  onStatus(callback: (status: "connecting" | "open" | "closed" | "error", detail?: unknown) => void): Unsubscribe;
  close(): void;
}

export declare class Client {
  readonly baseUrl: string;
  readonly auth: Auth;
  readonly files: Files;
  readonly realtime: Realtime;
  collection<T extends object = Document>(name: string): Collection<T>;
  channel(name: string): Channel;
  batch(): Batch;
  health(): Promise<{ status: string; version: string }>;
  /** A raw request to the API; resolves to the parsed JSON (null for 204), rejects with BackpackError. */
  request<R = unknown>(method: string, path: string, options?: RequestOptions): Promise<R>;
  url(path: string, query?: { [name: string]: string | number | boolean | undefined | null }): string;
  /** Closes the realtime connection (it reopens on the next subscribe or join). */
  close(): void;
}

export declare function createClient(baseUrl: string, options?: ClientOptions): Client;
export default createClient;
