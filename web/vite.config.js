import { defineConfig } from 'vite'

// `pinhole serve` serves web/dist; `npm run dev` proxies the API to a running server.
export default defineConfig({
  build: { outDir: 'dist', emptyOutDir: true, chunkSizeWarningLimit: 4000 },
  server: {
    proxy: {
      '/api': 'http://127.0.0.1:8080',
      '/data': 'http://127.0.0.1:8080',
      '/ws': { target: 'ws://127.0.0.1:8080', ws: true },
    },
  },
})
