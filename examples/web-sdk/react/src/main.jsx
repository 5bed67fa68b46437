import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { BrowserRouter } from 'react-router';
import App from './App.jsx';

// The site's settings and who is signed in, before the first render: the
// chat then loads as the app mounts. StrictMode mounts every effect twice in
// development; the SDK takes a second load() with the same options as the
// same chat.
Promise.all([fetch('/config.json').then((r) => r.json()), fetch('/me').then((r) => r.json())]).then(([config, me]) => {
  createRoot(document.getElementById('root')).render(
    <StrictMode>
      <BrowserRouter basename="/react">
        <App config={config} signedIn={me} />
      </BrowserRouter>
    </StrictMode>,
  );
});
