// Pinhole viewer: CT + labels in NiiVue, planned paths, live needle guidance over a
// WebSocket, a server-rendered fluoroscopy panel, the live ultrasound fused with the CT
// (shown once the server has fused a frame) and the needle found in a control CT (shown
// once one was sent: POST /api/control-ct). API: docs/api.md.
// Coordinates from the server are LPS mm; NiiVue's world is RAS mm (NIfTI), so x and y
// are negated at this edge and nowhere else.
// Display: radiological convention by default (patient's right on the viewer's left, as
// PACS, 3D Slicer and the fluoroscopy panel), orientation letters on every slice; the
// `radiological` box switches to the neurological convention and is remembered.
import { Niivue, SLICE_TYPE, SHOW_RENDER, DRAG_MODE } from '@niivue/niivue'
import './style.css'

const WINDOW_PRESETS = {
  soft: { level: 40, width: 400 },
  bone: { level: 500, width: 2000 },
  lung: { level: -600, width: 1500 },
}

// Lines (plans, routes, the needle) show on a slice only within this distance of it (mm);
// the 3-D view shows them whole.
const LINE_SLAB_MM = 4

// Observable state, read by the end-to-end test (web/e2e/demo.mjs).
const state = {
  sessionLoaded: false,
  volumesLoaded: false,
  guidanceUpdates: 0,
  lastMetrics: null,
  needleTipLps: null,
  drrLoads: 0,
  drrPose: null,
  // Slider move → preview image on screen (ms), one entry per preview shown.
  drrRoundTripsMs: [],
  // Where each preview's time went: waiting, server (to headers), body, image decode.
  drrPhasesMs: [],
  warningsShown: 0,
  // Live ultrasound: the latest /api/us/latest answer, the seq of the picture on
  // screen, and how many pictures were shown.
  usLatest: null,
  usSeqShown: null,
  usImageLoads: 0,
  // Control CT: the latest /api/control-ct/latest answer, and the detected needle drawn
  // (`{ seq, tip_lps, hub_lps }` read back from the drawn line's nodes; null when none).
  controlCt: null,
  controlNeedleShown: null,
  radiological: true,
  lineSlabMm: LINE_SLAB_MM,
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
  window.pinholeSession = session
  state.sessionLoaded = true
  $('session-title').textContent = session.title || 'session'
  showWarnings(session.warnings || [])
  showSourceEvents(session.source_events || [])
  setInterval(refreshSourceEvents, SOURCE_EVENTS_REFRESH_MS)
  buildLegend(session.labels_table || [])
  buildPlanList(session.lines || [])
  await initViewer()
  connectGuidance()
  initFluoro()
  initTools()
  initUltrasound()
  initControlCt()
}

// The reports' warnings (what the engine could not use or check) above everything.
function showWarnings(warnings) {
  state.warningsShown = warnings.length
  if (warnings.length === 0) return
  $('warnings-title').textContent = `${warnings.length} warning${warnings.length > 1 ? 's' : ''} (click to expand)`
  $('warnings-list').replaceChildren(
    ...warnings.map((text) => {
      const item = document.createElement('li')
      item.textContent = text
      return item
    }),
  )
  const banner = $('warnings')
  banner.title = 'Click to show the warnings in full'
  banner.addEventListener('click', () => banner.classList.toggle('expanded'))
  banner.dataset.clickable = 'yes'
  banner.hidden = false
}

// Who steered the live session (registration set or changed, a new tracking source, a
// refused peer; `source_events` of /api/session): the newest few, under the warnings.
const SOURCE_EVENTS_SHOWN = 5
const SOURCE_EVENTS_REFRESH_MS = 5000

function showSourceEvents(events) {
  state.sourceEvents = events.length
  if (events.length === 0) return
  let list = $('source-events')
  if (!list) {
    list = document.createElement('ul')
    list.id = 'source-events'
    $('warnings-list').after(list)
  }
  list.replaceChildren(
    ...events.slice(-SOURCE_EVENTS_SHOWN).map((e) => {
      const item = document.createElement('li')
      const time = new Date(e.time_unix_s * 1000).toLocaleTimeString()
      item.textContent = `${time} ${e.kind.replace('_', ' ')}: ${e.detail} (client ${e.client}, ${e.peer}, ${e.device})`
      return item
    }),
  )
  const n = state.warningsShown
  const warnings = n > 0 ? `${n} warning${n > 1 ? 's' : ''}, ` : ''
  $('warnings-title').textContent = `${warnings}${events.length} source event${events.length > 1 ? 's' : ''} (click to expand)`
  const banner = $('warnings')
  if (!banner.dataset.clickable) {
    banner.addEventListener('click', () => banner.classList.toggle('expanded'))
    banner.dataset.clickable = 'yes'
  }
  banner.hidden = false
}

async function refreshSourceEvents() {
  try {
    const latest = await getJson('/api/session')
    showSourceEvents(latest.source_events || [])
  } catch (e) {
    // The server may be restarting; the next refresh tries again.
  }
}

function softwareWebGl() {
  const gl = nv.gl
  const info = gl.getExtension('WEBGL_debug_renderer_info')
  const renderer = info ? gl.getParameter(info.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER)
  state.webglRenderer = String(renderer)
  return /swiftshader|llvmpipe|softpipe|software/i.test(state.webglRenderer)
}

function radiologicalSetting() {
  return localStorage.getItem('pinhole.radiological') !== 'false'
}

async function initViewer() {
  state.radiological = radiologicalSetting()
  nv = new Niivue({
    backColor: [0.07, 0.07, 0.07, 1],
    show3Dcrosshair: true,
    multiplanarShowRender: SHOW_RENDER.ALWAYS,
    isColorbar: false,
    dragAndDropEnabled: false,
    isRadiologicalConvention: state.radiological,
    isOrientationTextVisible: true,
    showAllOrientationMarkers: true,
    meshThicknessOn2D: LINE_SLAB_MM,
    // Radiology habits: left click = crosshair, right-drag = window/level, scroll = slice.
    dragMode: DRAG_MODE.contrast,
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
  // Shaded surfaces in the 3-D view, except on software WebGL where they cost seconds.
  if (!softwareWebGl()) await nv.setVolumeRenderIllumination(0.6)
  nv.onLocationChange = showPosition
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

function showPosition(location) {
  const ct = location.values?.[0]
  const label = location.values?.[1]
  const name = label ? labelNames.get(Math.round(label.value)) : undefined
  const ras = location.mm || [0, 0, 0]
  const lps = [-ras[0], -ras[1], ras[2]].map((v) => v.toFixed(1)).join(', ')
  $('position').textContent = `LPS ${lps} mm · ${ct ? Math.round(ct.value) : '?'} HU${name ? ` · ${name}` : ''}`
}

function resetView() {
  applyWindow('soft')
  nv.scene.pan2Dxyzmm = [0, 0, 0, 1]
  nv.setRenderAzimuthElevation(110, 10)
  nv.setSliceType(SLICE_TYPE.MULTIPLANAR)
  if (session.target_lps) moveCrosshair(session.target_lps)
}

function moveCrosshair(pointLps) {
  if (!nv || nv.volumes.length === 0) return
  nv.scene.crosshairPos = nv.mm2frac(lpsToRas(pointLps))
  nv.drawScene()
  nv.createOnLocationChange() // the position readout follows programmatic moves too
}

// Plans and routes drawn as one NiiVue connectome (nodes + edges), the live needle as a
// second one, so a needle update rebuilds two nodes, not every line (seconds on software
// WebGL). Long routes are thinned to at most MAX_LINE_NODES nodes for drawing.
const MAX_LINE_NODES = 64
let linesMesh = null
let needleMesh = null

function connectomeMesh(name, polylines) {
  const nodes = []
  const edges = []
  for (const { points, colorValue, size } of polylines) {
    const step = Math.max(1, Math.ceil(points.length / MAX_LINE_NODES))
    const kept = points.filter((_, i) => i % step === 0 || i === points.length - 1)
    const first = nodes.length
    kept.forEach((p, i) => {
      const [x, y, z] = lpsToRas(p)
      nodes.push({ name: '', x, y, z, colorValue, sizeValue: i === 0 || i === kept.length - 1 ? size : 0.3 })
    })
    for (let i = first; i + 1 < nodes.length; i++) edges.push({ first: i, second: i + 1, colorValue })
  }
  if (nodes.length === 0) return null
  return nv.loadConnectomeAsMesh({
    name,
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

function replaceMesh(old, mesh) {
  if (old) nv.removeMesh(old)
  if (mesh) nv.addMesh(mesh)
  return mesh
}

function redrawLines() {
  if (!nv || nv.volumes.length === 0) return
  const polylines = (session.lines || [])
    .filter((line) => line.visible !== false)
    .map((line) => ({
      points: line.points_lps,
      colorValue: line.kind === 'plan' ? 1 : line.kind === 'route' ? 3 : 2,
      size: line.kind === 'plan' ? 2 : 1,
    }))
  linesMesh = replaceMesh(linesMesh, connectomeMesh('pinhole-lines', polylines))
  nv.drawScene()
}

// The needle's mesh is added once and then moved in place (adding a mesh re-uploads the
// volumes: seconds on software WebGL).
function redrawNeedle() {
  if (!nv || !needle) return
  const tail = needle.tip_lps.map((v, i) => v - 60 * needle.axis_lps[i])
  const ends = [tail, needle.tip_lps]
  if (needleMesh?.nodes?.length === 2) {
    ends.forEach((p, i) => {
      const [x, y, z] = lpsToRas(p)
      needleMesh.nodes[i] = { ...needleMesh.nodes[i], x, y, z }
    })
    needleMesh.updateConnectome(nv.gl)
    return
  }
  needleMesh = replaceMesh(needleMesh, connectomeMesh('pinhole-needle', [{ points: ends, colorValue: 4, size: 2.5 }]))
}

// The needle found in the latest control CT (hub end → tip), drawn in the negative
// (winter: green) colours so it never looks like the plan (warm) or the live needle.
let controlMesh = null
const CONTROL_NEEDLE_COLOR = -4

function drawControlNeedle(seq, hubLps, tipLps) {
  if (!nv || nv.volumes.length === 0) return
  const ends = [hubLps, tipLps]
  if (controlMesh?.nodes?.length === 2) {
    ends.forEach((p, i) => {
      const [x, y, z] = lpsToRas(p)
      controlMesh.nodes[i] = { ...controlMesh.nodes[i], x, y, z }
    })
    controlMesh.updateConnectome(nv.gl)
    nv.drawScene()
  } else {
    controlMesh = replaceMesh(
      controlMesh,
      connectomeMesh('pinhole-control-needle', [{ points: ends, colorValue: CONTROL_NEEDLE_COLOR, size: 2.5 }]),
    )
    nv.drawScene()
  }
  // What is on screen, read back from the mesh (RAS → LPS).
  const drawn = controlMesh.nodes.map((n) => [-n.x, -n.y, n.z])
  state.controlNeedleShown = { seq, hub_lps: drawn[0], tip_lps: drawn[1] }
}

function clearControlNeedle() {
  if (!controlMesh) return
  nv.removeMesh(controlMesh)
  controlMesh = null
  state.controlNeedleShown = null
  nv.drawScene()
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

// Updates arrive at the tracker's rate; the panel and the 3-D needle are redrawn with the
// newest one at most every GUIDANCE_REDRAW_MS, or every 3 × the last redraw's duration
// (up to 2 s) when drawing is slower (software WebGL), so the page stays responsive.
const GUIDANCE_REDRAW_MS = 200
let pendingGuidance = null
let nextGuidanceRedraw = 0

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
  const now = performance.now()
  if (!pendingGuidance || !state.volumesLoaded || now < nextGuidanceRedraw) return
  const m = pendingGuidance
  pendingGuidance = null
  showGuidance(m)
  const took = performance.now() - now
  state.guidanceRedrawMs = took
  nextGuidanceRedraw = now + Math.min(Math.max(GUIDANCE_REDRAW_MS, 3 * took), 2000)
}, GUIDANCE_REDRAW_MS / 4)

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
  $('g-ahead').textContent = m.trajectory_hit
    ? `${m.trajectory_hit.name} in ${fmtMm(m.trajectory_hit.distance_mm)}`
    : 'clear'
  $('alert-reasons').textContent = (m.alert_reasons || []).join(' · ')
  $('g-inside').textContent = m.inside_target ? 'yes' : 'no'
  $('needle-tip').textContent = m.tip_lps.map((v) => v.toFixed(1)).join(', ')
  $('updates').textContent = `${state.guidanceUpdates} updates`
  const alert = m.alert || 'ok'
  $('guidance').className = `panel alert-${alert}`
  $('alert-badge').textContent = alert
  const axis = m.needle_axis_lps
  if (axis) {
    needle = { tip_lps: m.tip_lps, axis_lps: axis }
    redrawNeedle()
  }
  moveCrosshair(m.tip_lps)
}

function angleText(value, positive, negative) {
  if (value === 0) return positive === 'LAO' ? 'AP' : '0°'
  return `${value > 0 ? positive : negative} ${Math.abs(value)}°`
}

// One DRR request at a time; a newer slider position replaces any waiting one, and a
// slow full-quality render in flight is aborted for it (the server stops it too).
let drrWanted = null
let drrInFlight = null
// A random id per page load: the server cancels only this page's own older renders,
// never another viewer's (getRandomValues also works on plain http beyond loopback).
const drrClient = Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) =>
  b.toString(16).padStart(2, '0'),
).join('')

function initFluoro() {
  const lao = $('lao')
  const cran = $('cran')
  const want = (quality) => {
    $('lao-out').textContent = angleText(Number(lao.value), 'LAO', 'RAO')
    $('cran-out').textContent = angleText(Number(cran.value), 'CRAN', 'CAUD')
    requestDrr({ laoDeg: Number(lao.value), cranDeg: Number(cran.value), quality, requestedAt: performance.now() })
  }
  for (const slider of [lao, cran]) {
    slider.addEventListener('input', () => want('preview'))
    slider.addEventListener('change', () => want('full'))
  }
  // A quick first picture, the exact one right after.
  requestDrr({ laoDeg: 0, cranDeg: 0, quality: 'preview', requestedAt: performance.now() })
  requestDrr({ laoDeg: 0, cranDeg: 0, quality: 'full', requestedAt: performance.now() })
}

function requestDrr(job) {
  drrWanted = job
  if (drrInFlight?.job.quality === 'full') drrInFlight.controller.abort()
  pumpDrr()
}

async function pumpDrr() {
  if (drrInFlight || !drrWanted) return
  const job = drrWanted
  drrWanted = null
  drrInFlight = { job, controller: new AbortController() }
  try {
    await loadDrr(job, drrInFlight.controller.signal)
  } catch (error) {
    if (error.name !== 'AbortError') $('drr-info').textContent = `DRR failed: ${error.message || error}`
  } finally {
    drrInFlight = null
    pumpDrr()
  }
}

async function loadDrr(job, signal) {
  const { laoDeg, cranDeg, quality } = job
  const url = `/api/drr?lao_deg=${laoDeg}&cran_deg=${cranDeg}&size=512&quality=${quality}&client=${drrClient}`
  const sent = performance.now()
  const response = await fetch(url, { signal })
  if (response.status === 409) return // superseded by a newer request of this page
  if (response.status === 503) {
    // The server's renders are all busy (other viewers): say so, and try again unless
    // a newer slider position is already waiting.
    $('drr-info').textContent = `DRR busy, retrying: ${(await response.text()).trim()}`
    await new Promise((resolve) => setTimeout(resolve, 1000))
    if (!drrWanted) drrWanted = job
    return
  }
  if (!response.ok) throw new Error(`HTTP ${response.status}`)
  const answered = performance.now()
  const blob = await response.blob()
  const received = performance.now()
  const img = $('drr')
  const previous = img.src
  img.src = URL.createObjectURL(blob)
  if (previous) URL.revokeObjectURL(previous)
  await img.decode()
  const roundTripMs = performance.now() - job.requestedAt
  if (quality === 'preview') {
    state.drrRoundTripsMs.push(roundTripMs)
    state.drrPhasesMs.push({
      queued: sent - job.requestedAt,
      server: answered - sent,
      body: received - answered,
      decode: performance.now() - received,
      bytes: blob.size,
    })
  }
  state.drrLoads += 1
  state.drrPose = { lao_deg: laoDeg, cran_deg: cranDeg, quality }
  const renderer = response.headers.get('x-pinhole-renderer') || 'server'
  $('drr-info').textContent = `${renderer} · ${quality} · ${roundTripMs.toFixed(0)} ms`
}

// Live ultrasound: /api/us/latest polled about 10 times a second (204 until the server
// has fused a frame), the picture fetched when its seq or the chosen view changes; one
// request in flight at most (a poll that finds one running is skipped).
const US_POLL_MS = 100
let usView = 'blend'
let usShown = null // `${seq}:${view}` of the picture on screen
let usBusy = false

function initUltrasound() {
  for (const radio of document.querySelectorAll('input[name=us-view]')) {
    radio.addEventListener('change', () => {
      if (radio.checked) usView = radio.value
      pollUltrasound()
    })
  }
  setInterval(pollUltrasound, US_POLL_MS)
}

async function pollUltrasound() {
  if (usBusy) return
  usBusy = true
  try {
    const response = await fetch('/api/us/latest', { cache: 'no-store' })
    if (response.status === 204) return
    if (!response.ok) throw new Error(`HTTP ${response.status}`)
    const latest = await response.json()
    state.usLatest = latest
    $('us').hidden = false
    const view = usView
    if (usShown !== `${latest.seq}:${view}`) {
      const seq = await loadUsPicture(latest.seq, view)
      usShown = `${seq}:${view}`
    }
    const [sx, sy] = latest.pixel_spacing_mm
    $('us-info').textContent =
      `${latest.width_px}×${latest.height_px} px · ${sx.toFixed(2)}×${sy.toFixed(2)} mm · ` +
      `age ${latest.age_ms.toFixed(0)} ms`
  } catch (error) {
    $('us-info').textContent = `ultrasound: ${error.message || error}`
  } finally {
    usBusy = false
  }
}

// Fetches the newest picture; returns the seq it shows (it may be newer than asked).
async function loadUsPicture(seq, view) {
  const response = await fetch(`/api/us/frame.png?view=${view}&seq=${seq}`, { cache: 'no-store' })
  if (!response.ok) throw new Error(`picture: HTTP ${response.status}`)
  const shown = Number(response.headers.get('x-pinhole-us-seq') || seq)
  const blob = await response.blob()
  const img = $('us-img')
  const previous = img.src
  img.src = URL.createObjectURL(blob)
  if (previous) URL.revokeObjectURL(previous)
  await img.decode()
  img.dataset.seq = String(shown)
  img.dataset.view = view
  state.usSeqShown = shown
  state.usImageLoads += 1
  $('us-seq').textContent = `#${shown} · ${view === 'blend' ? 'blended' : 'reslice'}`
  return shown
}

// Control CT: /api/control-ct/latest polled every second (204 until a control scan was
// sent). The panel is built here (hidden until then) so the page needs no other markup.
const CONTROL_POLL_MS = 1000
let controlBusy = false
let controlDrawnSeq = null

function initControlCt() {
  const panel = document.createElement('section')
  panel.id = 'control-ct'
  panel.className = 'panel'
  panel.hidden = true
  panel.innerHTML = `
    <h2>Control CT <span id="cc-state">–</span></h2>
    <div id="cc-message"></div>
    <table>
      <tr><th>Tip → target</th><td id="cc-tip-to-target">–</td></tr>
      <tr><th>Miss at target depth</th><td id="cc-miss">–</td></tr>
      <tr><th>Angle to plan</th><td id="cc-angle">–</td></tr>
      <tr><th>Depth remaining</th><td id="cc-depth">–</td></tr>
      <tr><th>Tip in</th><td id="cc-tip-in">–</td></tr>
    </table>
    <div id="cc-correction"></div>
    <div id="cc-info"></div>
    <div class="hint">Green line: the needle found in the control scan (hub end → tip), in the planning frame. Check it on the scan before acting on the correction.</div>`
  $('guidance').after(panel)
  setInterval(pollControlCt, CONTROL_POLL_MS)
  pollControlCt()
}

async function pollControlCt() {
  if (controlBusy || !state.volumesLoaded) return
  controlBusy = true
  try {
    const response = await fetch('/api/control-ct/latest', { cache: 'no-store' })
    if (response.status === 204) return
    if (!response.ok) throw new Error(`HTTP ${response.status}`)
    showControlCt(await response.json())
  } catch (error) {
    $('cc-info').textContent = `control CT: ${error.message || error}`
  } finally {
    controlBusy = false
  }
}

function showControlCt(check) {
  state.controlCt = check
  $('control-ct').hidden = false
  const findings = check.findings
  const metrics = findings?.metrics
  const needle = findings?.needle
  let message = ''
  let badge = check.state
  if (check.state === 'processing') {
    message = `control scan #${check.seq}: registering and finding the needle…`
  } else if (check.state === 'failed') {
    const alignment = check.alignment
    message =
      alignment && !alignment.converged
        ? `registration failed: ${alignment.reason || check.error}`
        : `check failed: ${check.error}`
  } else if (findings && !findings.found) {
    message = `no needle found: ${findings.not_found_reason || 'unknown reason'}`
    badge = 'no needle'
  }
  $('cc-state').textContent = `#${check.seq} · ${badge}`
  $('control-ct').className = `panel cc-${check.state}${findings && !findings.found ? ' cc-none' : ''}`
  $('cc-message').textContent = message
  if (check.state !== 'processing') {
    $('cc-tip-to-target').textContent = fmtMm(metrics?.tip_to_target_mm)
    $('cc-miss').textContent = fmtMm(metrics?.miss_at_target_depth_mm)
    $('cc-angle').textContent = fmtDeg(metrics?.angle_to_plan_deg)
    $('cc-depth').textContent = fmtMm(metrics?.depth_remaining_mm)
    $('cc-tip-in').textContent = metrics ? metrics.tip_in || '–' : '–'
    $('cc-correction').textContent = findings?.correction?.text || ''
  }
  const received = new Date(check.received_unix_s * 1000).toLocaleTimeString()
  const confidence = needle ? ` · confidence ${needle.in_control.confidence.toFixed(2)}` : ''
  $('cc-info').textContent = `scan #${check.seq} received ${received}${confidence}`
  // The needle drawn is the newest check's: while a newer scan is processed the previous
  // needle stays; a failed check or no needle removes it (never a stale position).
  if (check.state === 'processing' || controlDrawnSeq === check.seq) return
  controlDrawnSeq = check.seq
  if (check.state === 'done' && needle) {
    drawControlNeedle(check.seq, needle.hub_end_planning_lps, needle.tip_planning_lps)
    moveCrosshair(needle.tip_planning_lps)
  } else {
    clearControlNeedle()
  }
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
  const radiological = $('radiological')
  radiological.checked = state.radiological
  radiological.addEventListener('change', () => {
    state.radiological = radiological.checked
    localStorage.setItem('pinhole.radiological', String(radiological.checked))
    nv.setRadiologicalConvention(radiological.checked)
  })
  $('reset').addEventListener('click', resetView)
}

main().catch((error) => {
  console.error(error)
  reportError(error.message || error)
})
