// The control plane's API as the console calls it: JSON in and out, the
// session cookie as the credential, and every failure turned into a message a
// person can read. A 401 means the session ended: the browser goes to sign-in
// and comes back to the page it was on.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// The API's stable messages that deserve different words in the console.
const READABLE = {
  'cross-site request refused': 'The request was refused because it did not come from this console. Reload the page and try again.',
  'admin role required': 'This needs the admin role.',
  'invalid or expired credentials': 'Your session has ended. Sign in again.',
  'authentication required': 'Sign in to continue.',
  'invalid admin token': 'That admin token is not valid.',
};

const BY_STATUS = {
  400: 'The request was not accepted.',
  403: 'You are not allowed to do that.',
  404: 'It was not found; it may have been deleted.',
  409: 'That conflicts with something that already exists.',
  413: 'The request is too large.',
  429: 'Too many requests; wait a moment and try again.',
  500: 'The control plane failed to answer. Try again; if it keeps failing, check its log.',
  502: 'The control plane could not be reached through the proxy.',
  503: 'The control plane is not available right now. Try again shortly.',
  504: 'The control plane did not answer in time.',
};

/** A sentence for a status and the API's `error` text. */
export function readable(status, error) {
  if (error && READABLE[error]) return READABLE[error];
  if (error) {
    const sentence = error.charAt(0).toUpperCase() + error.slice(1);
    return /[.!?]$/.test(sentence) ? sentence : `${sentence}.`;
  }
  return BY_STATUS[status] || `The request failed (HTTP ${status}).`;
}

/** The sign-in page, coming back to where the person is now. */
export function signInUrl() {
  return `/signin?next=${encodeURIComponent(location.pathname + location.search)}`;
}

/** Calls the API; resolves to the parsed body (null for 204), or throws
 *  ApiError with a readable message. */
export async function api(method, path, body, { redirectOn401 = true } = {}) {
  const init = { method, credentials: 'same-origin', cache: 'no-store', headers: { Accept: 'application/json' } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, 'The control plane could not be reached. Check the connection and try again.');
  }
  if (response.status === 401 && redirectOn401) {
    location.assign(signInUrl());
    throw new ApiError(401, READABLE['invalid or expired credentials']);
  }
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) throw new ApiError(response.status, readable(response.status, data && data.error));
  return data;
}

/** GET of a list endpoint: its items. */
export async function list(path) {
  const data = await api('GET', path);
  return (data && data.items) || [];
}
