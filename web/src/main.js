// Pinhole viewer: CT + labels in NiiVue, planned paths, live needle guidance over a
// WebSocket and a server-rendered fluoroscopy panel. API: docs/api.md.
// Coordinates from the server are LPS mm; NiiVue's world is RAS mm (NIfTI), so x and y
// are negated at this edge and nowhere else.
import { Niivue, SLICE_TYPE, SHOW_RENDER } from '@niivue/niivue'
import './style.css'

const WINDOW_PRESETS = {
  soft: { level: 40, width: 400 },
  bone: { level: 500, width: 2000 },
  lung: { level: -600, width: 1500 },
}

// Observable state, read by the end-to-end test (web/e2e/demo.mjs).
const state = {
  sessionLoaded: false,
  volumesLoaded: false,
  guidanceUpdates: 0,
  lastMetrics: null,
  needleTipLps: null,
  drrLoads: 0,
  drrPose: null,
  errors: [],
}
window.pinhole = state

const $ = (id) => document.getElementById(id)
const lpsToRas = (p) => [-p[0], -p[1], p[2]]
const fmtMm = (v) => (v === null || v === undefined ? '–' : `${v.toFixed(1)} mm`)
const fmtDeg = (v) => (v === null || v === undefined ? '–' : `${v.toFixed(1)}°`)

let nv = null
let session = null
let labelNames = new Map()
let needle = null // { tip_lps, axis_lps }

async function getJson(url) {
  const response = await fetch(url)
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`)
  return response.json()
}

function reportError(message) {
  state.errors.push(String(message))
  $('session-title').textContent = `error: ${message}`
}

async function main() {
  session = await getJson('/api/session')
  state.sessionLoaded = true
  $('session-title').textContent = session.title || 'session'
  buildLegend(session.labels_table || [])
  buildPlanList(session.lines || [])
  await initViewer()
  connectGuidance()
  initFluoro()
  initTools()
}

async function initViewer() {
  nv = new Niivue({
    backColor: [0.07, 0.07, 0.07, 1],
    show3Dcrosshair: true,
    multiplanarShowRender: SHOW_RENDER.ALWAYS,
    isColorbar: false,
    dragAndDropEnabled: false,
  })
  await nv.attachTo('gl')
  window.pinholeNiivue = nv
  nv.setSliceType(SLICE_TYPE.MULTIPLANAR)
  const volumes = [{ url: session.volumes.ct.url, name: 'ct.nii.gz', colormap: 'gray' }]
  if (session.volumes.labels) {
    volumes.push({ url: session.volumes.labels.url, name: 'labels.nii.gz', opacity: 0.45 })
  }
  for (const overlay of session.overlays || []) {
    volumes.push({ url: overlay.url, name: overlay.name, colormap: 'red', opacity: overlay.opacity ?? 0.4, cal_min: 0.5, cal_max: 1 })
  }
  await nv.loadVolumes(volumes)
  if (session.volumes.labels) applyLabelColormap(nv.volumes[1], session.labels_table || [])
  applyWindow('soft')
  nv.onLocationChange = showHover
  if (session.target_lps) moveCrosshair(session.target_lps)
  redrawLines()
  state.volumesLoaded = true
}

function applyLabelColormap(volume, labels) {
  const maxId = labels.reduce((m, l) => Math.max(m, l.id), 0)
  const cm = { R: [], G: [], B: [], A: [], I: [], labels: [] }
  for (let id = 0; id <= maxId; id++) {
    const entry = labels.find((l) => l.id === id)
    const [r, g, b] = entry ? entry.color : [0, 0, 0]
    cm.R.push(r)
    cm.G.push(g)
    cm.B.push(b)
    cm.A.push(entry && id > 0 ? 255 : 0)
    cm.I.push(id)
    cm.labels.push(entry ? entry.name : '')
  }
  volume.setColormapLabel(cm)
  nv.updateGLVolume()
}

function applyWindow(name) {
  const { level, width } = WINDOW_PRESETS[name]
  const ct = nv.volumes[0]
  ct.cal_min = level - width / 2
  ct.cal_max = level + width / 2
  nv.updateGLVolume()
}

function showHover(location) {
  const ct = location.values?.[0]
  const label = location.values?.[1]
  const name = label ? labelNames.get(Math.round(label.value)) : undefined
  const ras = location.mm || [0, 0, 0]
  const lps = [-ras[0], -ras[1], ras[2]].map((v) => v.toFixed(1)).join(', ')
  $('hover').textContent = `LPS ${lps} · ${ct ? Math.round(ct.value) : '?'} HU${name ? ` · ${name}` : ''}`
}

function moveCrosshair(pointLps) {
  if (!nv || nv.volumes.length === 0) return
  nv.scene.crosshairPos = nv.mm2frac(lpsToRas(pointLps))
  nv.drawScene()
}

// Plans, routes and the live needle drawn as one NiiVue connectome (nodes + edges).
function redrawLines() {
  if (!nv || nv.volumes.length === 0) return
  const nodes = []
  const edges = []
  const addPolyline = (points, colorValue, size) => {
    const first = nodes.length
    points.forEach((p, i) => {
      const [x, y, z] = lpsToRas(p)
      nodes.push({ name: '', x, y, z, colorValue, sizeValue: i === 0 || i === points.length - 1 ? size : 0.3 })
    })
    for (let i = first; i + 1 < nodes.length; i++) edges.push({ first: i, second: i + 1, colorValue })
  }
  for (const line of session.lines || []) {
    if (line.visible === false) continue
    const value = line.kind === 'plan' ? 1 : line.kind === 'route' ? 3 : 2
    addPolyline(line.points_lps, value, line.kind === 'plan' ? 2 : 1)
  }
  if (needle) {
    const tail = needle.tip_lps.map((v, i) => v - 60 * needle.axis_lps[i])
    addPolyline([tail, needle.tip_lps], 4, 2.5)
  }
  if (nodes.length === 0) return
  nv.loadConnectome({
    name: 'pinhole-lines',
    nodeColormap: 'warm',
    nodeColormapNegative: 'winter',
    nodeMinColor: 0,
    nodeMaxColor: 4,
    nodeScale: 1.5,
    edgeColormap: 'warm',
    edgeColormapNegative: 'winter',
    edgeMin: 0,
    edgeMax: 4,
    edgeScale: 1,
    nodes,
    edges,
  })
}

function buildLegend(labels) {
  labelNames = new Map(labels.map((l) => [l.id, l.name]))
  const list = $('legend-list')
  list.replaceChildren(
    ...labels
      .filter((l) => l.id > 0)
      .map((l) => {
        const item = document.createElement('li')
        const swatch = document.createElement('span')
        swatch.className = 'swatch'
        swatch.style.background = `rgb(${l.color.join(',')})`
        item.append(swatch, document.createTextNode(l.name))
        return item
      }),
  )
}

function buildPlanList(lines) {
  $('plan-list').replaceChildren(
    ...lines.map((line) => {
      const item = document.createElement('li')
      const box = document.createElement('input')
      box.type = 'checkbox'
      box.checked = line.visible !== false
      box.addEventListener('change', () => {
        line.visible = box.checked
        redrawLines()
      })
      const length = line.length_mm ? ` · ${line.length_mm.toFixed(0)} mm` : ''
      item.append(box, document.createTextNode(`${line.name}${length}`))
      return item
    }),
  )
}

// Updates arrive at the tracker's rate; the panel and the 3-D needle are redrawn at most
// every GUIDANCE_REDRAW_MS with the newest one (software WebGL cannot keep up with 20 Hz).
const GUIDANCE_REDRAW_MS = 200
let pendingGuidance = null

function connectGuidance() {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws'
  const socket = new WebSocket(`${scheme}://${location.host}/ws/guidance`)
  socket.onmessage = (event) => {
    pendingGuidance = JSON.parse(event.data)
    state.guidanceUpdates += 1
  }
  socket.onclose = () => setTimeout(connectGuidance, 1000)
}

setInterval(() => {
  if (!pendingGuidance || !state.volumesLoaded) return
  const m = pendingGuidance
  pendingGuidance = null
  showGuidance(m)
}, GUIDANCE_REDRAW_MS)

function showGuidance(m) {
  state.lastMetrics = m
  state.needleTipLps = m.tip_lps
  $('g-tip-to-target').textContent = fmtMm(m.tip_to_target_mm)
  $('g-lateral').textContent = fmtMm(m.lateral_deviation_mm)
  $('g-angle').textContent = fmtDeg(m.angle_deg)
  $('g-depth').textContent = fmtMm(m.depth_remaining_mm)
  $('g-nearest').textContent = m.nearest_structure
    ? `${m.nearest_structure.name} ${fmtMm(m.nearest_structure.distance_mm)}`
    : '–'
  $('g-inside').textContent = m.inside_target ? 'yes' : 'no'
  $('needle-tip').textContent = m.tip_lps.map((v) => v.toFixed(1)).join(', ')
  $('updates').textContent = `${state.guidanceUpdates} updates`
  const alert = m.alert || 'ok'
  $('guidance').className = `panel alert-${alert}`
  $('alert-badge').textContent = alert
  const axis = m.needle_axis_lps
  if (axis) {
    needle = { tip_lps: m.tip_lps, axis_lps: axis }
    redrawLines()
  }
  moveCrosshair(m.tip_lps)
}

function angleText(value, positive, negative) {
  if (value === 0) return positive === 'LAO' ? 'AP' : '0°'
  return `${value > 0 ? positive : negative} ${Math.abs(value)}°`
}

function initFluoro() {
  const lao = $('lao')
  const cran = $('cran')
  let timer = null
  const request = () => {
    $('lao-out').textContent = angleText(Number(lao.value), 'LAO', 'RAO')
    $('cran-out').textContent = angleText(Number(cran.value), 'CRAN', 'CAUD')
    clearTimeout(timer)
    timer = setTimeout(() => loadDrr(Number(lao.value), Number(cran.value)), 120)
  }
  lao.addEventListener('input', request)
  cran.addEventListener('input', request)
  loadDrr(0, 0)
}

async function loadDrr(laoDeg, cranDeg) {
  const started = performance.now()
  const response = await fetch(`/api/drr?lao_deg=${laoDeg}&cran_deg=${cranDeg}&size=384`)
  if (!response.ok) {
    $('drr-info').textContent = `DRR failed: HTTP ${response.status}`
    return
  }
  const blob = await response.blob()
  const img = $('drr')
  const previous = img.src
  img.src = URL.createObjectURL(blob)
  if (previous) URL.revokeObjectURL(previous)
  await img.decode()
  state.drrLoads += 1
  state.drrPose = { lao_deg: laoDeg, cran_deg: cranDeg }
  const renderer = response.headers.get('x-pinhole-renderer') || 'server'
  $('drr-info').textContent = `${renderer} · ${(performance.now() - started).toFixed(0)} ms`
}

function initTools() {
  for (const button of document.querySelectorAll('[data-preset]')) {
    button.addEventListener('click', () => applyWindow(button.dataset.preset))
  }
  for (const button of document.querySelectorAll('[data-layout]')) {
    button.addEventListener('click', () =>
      nv.setSliceType(button.dataset.layout === 'render' ? SLICE_TYPE.RENDER : SLICE_TYPE.MULTIPLANAR),
    )
  }
  $('show-labels').addEventListener('change', (event) => {
    if (nv.volumes[1]) nv.setOpacity(1, event.target.checked ? 0.45 : 0)
  })
}

main().catch((error) => {
  console.error(error)
  reportError(error.message || error)
})
