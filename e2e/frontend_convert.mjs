// Runs ComfyUI's own "Export (API)" conversion (app.graphToPrompt of the real frontend) on
// UI-format workflows, in Debian's headless Chromium, and writes the API JSON it produces.
// These outputs are the reference data for comfyrs's converter (tests/ui_workflow_reference.rs).
//
// No server is needed: every request of the page is answered here, the frontend's files from
// its static root and the API routes from canned answers, with /object_info taken from a file
// (`comfyrs nodes --json`, so the frontend sees exactly comfyrs's node schemas).
//
// usage: node frontend_convert.mjs FRONTEND_STATIC_DIR OBJECT_INFO_JSON OUT_DIR WORKFLOW.json...
// Writes OUT_DIR/<name>.api.json per workflow (or <name>.error.txt when the frontend throws).
import { chromium } from 'playwright-core'
import fs from 'node:fs'
import path from 'node:path'

const [root, objectInfoPath, outDir, ...workflows] = process.argv.slice(2)
if (!root || !objectInfoPath || !outDir) {
  console.error('usage: node frontend_convert.mjs FRONTEND_STATIC_DIR OBJECT_INFO_JSON OUT_DIR WORKFLOW.json...')
  process.exit(2)
}
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium-headless-shell'
const objectInfo = fs.readFileSync(objectInfoPath, 'utf8')
fs.mkdirSync(outDir, { recursive: true })

const MIME = {
  '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.css': 'text/css',
  '.json': 'application/json', '.svg': 'image/svg+xml', '.png': 'image/png', '.webp': 'image/webp',
  '.woff2': 'font/woff2', '.woff': 'font/woff', '.ttf': 'font/ttf', '.ico': 'image/x-icon',
  '.map': 'application/json', '.wasm': 'application/wasm'
}

// What the API routes answer: a single-user server with no saved data.
function api(route) {
  const json = (body, status = 200) => ({ status, contentType: 'application/json', body: JSON.stringify(body) })
  if (route === '/object_info') return { status: 200, contentType: 'application/json', body: objectInfo }
  if (route === '/users') return json({ storage: 'server', migrated: true })
  if (route === '/settings') return json({ 'Comfy.TutorialCompleted': true })
  if (route.startsWith('/settings/')) return json(null)
  if (route.startsWith('/userdata')) return json({ error: 'not found' }, 404)
  if (route === '/extensions') return json([])
  if (route === '/i18n') return json({})
  if (route === '/embeddings') return json([])
  if (route === '/workflow_templates') return json({})
  if (route === '/queue') return json({ queue_running: [], queue_pending: [] })
  if (route.startsWith('/history')) return json({})
  if (route === '/prompt') return json({ exec_info: { queue_remaining: 0 } })
  if (route === '/features') return json({ supports_preview_metadata: true })
  if (route === '/system_stats') {
    return json({
      system: { os: 'posix', python_version: '3.11', embedded_python: false, comfyui_version: '0.3.64',
        pytorch_version: '2.0', argv: ['main.py'], ram_total: 1, ram_free: 1, required_frontend_version: '1.27.10' },
      devices: [{ name: 'cpu', type: 'cpu', index: null, vram_total: 0, vram_free: 0, torch_vram_total: 0, torch_vram_free: 0 }]
    })
  }
  if (route.startsWith('/experiment/models')) return json([])
  return json({ error: 'not found' }, 404)
}

const browser = await chromium.launch({ executablePath, args: ['--no-sandbox'] })
const page = await browser.newPage()
const errors = []
page.on('pageerror', (e) => errors.push(String(e)))
await page.route('**/*', async (r) => {
  const url = new URL(r.request().url())
  if (url.hostname !== 'comfy.test') return r.abort()
  let p = decodeURIComponent(url.pathname)
  if (p.startsWith('/api/')) return r.fulfill(api(p.slice(4)))
  if (p.startsWith('/internal/')) return r.fulfill({ status: 200, contentType: 'application/json', body: '{}' })
  if (p === '/') p = '/index.html'
  const file = path.join(root, path.normalize(p))
  if (!file.startsWith(root) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) {
    return r.fulfill({ status: 404, body: '' })
  }
  return r.fulfill({ status: 200, contentType: MIME[path.extname(file)] || 'application/octet-stream', body: fs.readFileSync(file) })
})
await page.goto('http://comfy.test/')
await page.waitForFunction(() => window.app?.graph && window.LiteGraph?.registered_node_types?.KSampler, null, { timeout: 120000 })

// DUMP_TITLES=FILE: the node titles the frontend shows (its English locale's display names).
if (process.env.DUMP_TITLES) {
  const titles = await page.evaluate(() => Object.fromEntries(
    Object.entries(window.LiteGraph.registered_node_types).map(([k, v]) => [k, v.title])))
  fs.writeFileSync(process.env.DUMP_TITLES, JSON.stringify(titles, null, 1))
}

let failed = 0
for (const wf of workflows) {
  const name = path.basename(wf).replace(/\.json$/, '')
  const data = JSON.parse(fs.readFileSync(wf, 'utf8'))
  const result = await page.evaluate(async (graph) => {
    try {
      await window.app.loadGraphData(graph, true, true, null, { showMissingNodesDialog: false, showMissingModelsDialog: false })
      const { output } = await window.app.graphToPrompt()
      return { ok: JSON.stringify(output, null, 2) }
    } catch (e) {
      return { err: String(e && e.stack || e) }
    }
  }, data)
  if (result.ok !== undefined) {
    fs.writeFileSync(path.join(outDir, `${name}.api.json`), result.ok + '\n')
  } else {
    failed++
    fs.writeFileSync(path.join(outDir, `${name}.error.txt`), result.err + '\n')
  }
}
await browser.close()
if (errors.length) console.error(`page errors:\n${errors.join('\n')}`)
console.log(`${workflows.length - failed} converted, ${failed} failed`)
