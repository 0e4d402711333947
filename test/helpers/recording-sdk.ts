/**
 * Recording doubles of Google Cloud SDK clients (gax clients such as Pub/Sub's SubscriberClient,
 * Cloud Run's JobsClient, Vertex AI's JobServiceClient, and google-auth-library's `request`).
 *
 * A recording client is a `Proxy`: every method called on it, known or not, is recorded with its
 * request (the first argument) and answered with a canned response. It speaks the three calling
 * conventions of the generated clients:
 *  - promise style `client.pull(request, options)` → resolves to `[response]`;
 *  - callback style `client.publish(request, gaxOptions, callback)` (how `PubSub#request` calls
 *    the gax client it keeps in `pubsub.api`) → `callback(null, response)`;
 *  - paginated `client.listXAsync(request)` → an async iterable over the response array.
 * Methods without a canned answer answer `{}` (or nothing to iterate), so code that calls an
 * unexpected method runs on and the caller can judge the recorded call.
 */
export interface SdkCall {
  /** Name of the client, e.g. `SubscriberClient`. */
  client: string;
  method: string;
  request: unknown;
}

export type Answers = Record<string, (request: any) => unknown>;

export function recordingClient<T>(client: string, calls: SdkCall[], answers: Answers = {}): T {
  return new Proxy(
    {},
    {
      get(_target, prop) {
        // Not a thenable (`Promise.resolve(client)` must not adopt it), no symbol protocols.
        if (typeof prop !== 'string' || prop === 'then' || prop === 'toJSON') return undefined;
        return (...args: unknown[]) => {
          const request = args[0];
          calls.push({ client, method: prop, request });
          const answer = answers[prop]?.(request);
          const callback = args.find((a): a is (err: null, response: unknown) => void => typeof a === 'function');
          if (callback) {
            queueMicrotask(() => callback(null, answer ?? {}));
            return undefined;
          }
          if (prop.endsWith('Async')) return iterate((answer as unknown[] | undefined) ?? []);
          return Promise.resolve([answer ?? {}]);
        };
      },
    },
  ) as T;
}

/** A google-auth-library `GoogleAuth`-shaped `{ request }` that records each REST call. */
export function recordingAuth(calls: SdkCall[], answer: (opts: { url: string; method?: string }) => unknown) {
  return {
    request: async <R>(opts: { url: string; method?: string }): Promise<{ data: R }> => {
      calls.push({ client: 'GoogleAuth', method: 'request', request: opts });
      return { data: answer(opts) as R };
    },
  };
}

async function* iterate<T>(items: T[]): AsyncGenerator<T> {
  for (const item of items) yield item;
}
