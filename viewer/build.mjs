// Bundles src/ into ../nnunet_quantif/server/static/ (index.html, quantif-viewer.js, quantif-viewer.css).
// The output depends only on the sources and the locked packages: no timestamps, no absolute paths, no source map.
import { build } from 'esbuild'
import { copyFileSync, mkdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const out = join(here, '..', 'nnunet_quantif', 'server', 'static')
mkdirSync(out, { recursive: true })

await build({
  absWorkingDir: here,
  entryPoints: ['src/main.js'],
  outfile: join(out, 'quantif-viewer.js'),
  bundle: true,
  format: 'iife',
  target: ['es2022'],
  minify: true,
  legalComments: 'eof',
  sourcemap: false,
  charset: 'utf8',
  logLevel: 'warning'
})
copyFileSync(join(here, 'src', 'style.css'), join(out, 'quantif-viewer.css'))
copyFileSync(join(here, 'src', 'index.html'), join(out, 'index.html'))
