// Who is signed in: the token and user, in sessionStorage (this tab) or, with "keep me signed in",
// localStorage.
const KEY = "vlb.session";
let listeners = [];

function read() {
  for (const store of [sessionStorage, localStorage]) {
    const text = store.getItem(KEY);
    if (text) {
      try {
        return JSON.parse(text);
      } catch {
        store.removeItem(KEY);
      }
    }
  }
  return null;
}

export const session = {
  current: () => read(),
  token: () => read()?.token || null,
  user: () => read()?.user || null,
  isAdmin: () => read()?.user?.role === "admin",
  signIn(token, user, remember) {
    this.clear();
    (remember ? localStorage : sessionStorage).setItem(KEY, JSON.stringify({ token, user }));
    listeners.forEach((fn) => fn());
  },
  updateUser(user) {
    const current = read();
    if (!current) return;
    const store = localStorage.getItem(KEY) ? localStorage : sessionStorage;
    store.setItem(KEY, JSON.stringify({ ...current, user }));
    listeners.forEach((fn) => fn());
  },
  clear() {
    sessionStorage.removeItem(KEY);
    localStorage.removeItem(KEY);
  },
  expired() {
    this.clear();
    listeners.forEach((fn) => fn("expired"));
  },
  onChange(fn) {
    listeners.push(fn);
  },
};
