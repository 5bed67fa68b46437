import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// Served by ../server.mjs under /react/, next to the company site's endpoints.
export default defineConfig({
  base: '/react/',
  plugins: [react()],
});
