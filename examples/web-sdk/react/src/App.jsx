import { useState } from 'react';
import { Link, Route, Routes } from 'react-router';
import { signOut, useChat, useChatState } from './chat.js';

function ChatStatus() {
  const s = useChatState();
  return (
    <p>
      Chat:{' '}
      <b data-testid="status" data-status={s.status} data-login={s.login} data-session={s.sessionId || ''}>
        {s.status === 'failed' ? `failed (${s.reason})` : `${s.status}, ${s.login}`}
      </b>
    </p>
  );
}

function SignIn({ onSignedIn }) {
  const [problem, setProblem] = useState('');
  async function submit(e) {
    e.preventDefault();
    const form = new FormData(e.target);
    const r = await fetch('/login', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: form.get('username'), password: form.get('password') }),
    });
    if (!r.ok) return setProblem('Wrong username or password.');
    onSignedIn(await r.json());
  }
  return (
    <form data-testid="signin" onSubmit={submit}>
      <label>Username <input name="username" data-testid="username" /></label>
      <label>Password <input name="password" type="password" data-testid="password" /></label>
      <button data-testid="signin-submit">Sign in</button>
      <p role="alert">{problem}</p>
    </form>
  );
}

export default function App({ config, signedIn }) {
  const [me, setMe] = useState(signedIn); // null: nobody signed in
  useChat(config, me);

  async function signOutHere() {
    await fetch('/logout', { method: 'POST' });
    signOut();
    setMe(null);
  }

  return (
    <main>
      <nav>
        <Link to="/" data-testid="nav-home">Home</Link> · <Link to="/account" data-testid="nav-account">Account</Link>
      </nav>
      {me ? (
        <p data-testid="signed-in">
          Signed in as <b>{me.username}</b> <button data-testid="signout" onClick={signOutHere}>Sign out</button>
        </p>
      ) : (
        <SignIn onSignedIn={setMe} />
      )}
      <Routes>
        <Route path="/" element={<h1 data-testid="page-home">Acme</h1>} />
        <Route path="/account" element={<h1 data-testid="page-account">Your account</h1>} />
      </Routes>
      <ChatStatus />
    </main>
  );
}
