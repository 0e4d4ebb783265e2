// The browser viewer of `quantif serve`: opens a case, shows CT (grey) and PET (hot) fused in three planes
// (NiiVue) and a coronal PET MIP (canvas), sends clicks, and overlays the mask updates the server returns.
//
// Axis order: the server sends the case as NIfTI; NIfTI voxel (i, j, k) is the API's `xyz` (image index order).
// A mask box and its bytes are (z, y, x) C-order, which is also the memory order of a NIfTI volume
// (x fastest), so box row (z, y) starts at x0 + nx * (y + ny * z) in the volume.

import { Niivue, NVImage, SHOW_RENDER, SLICE_TYPE } from '@niivue/niivue'

const API = 'api/v1'
const API_VERSION = '1'
const KEY_STORAGE = 'quantif-api-key'
const POLL_MS = 500
const CLICK_SLOP_PX = 4
// CT window (HU) and PET display range (SUV) of the fused view and the MIP
const CT_RANGE = [-160, 240]
const PET_MIN_MAX = 4
const PET_OPACITY = 0.55
const MASK_OPACITY = 0.6
// the mask's colour (cyan: apart from the hot PET), as a NiiVue label table: 0 transparent, 1 lesion
const MASK_RGB = [0, 230, 255]
const MASK_LUT = { R: [0, MASK_RGB[0]], G: [0, MASK_RGB[1]], B: [0, MASK_RGB[2]], A: [0, 255], I: [0, 1], labels: ['', 'lesion'] }

const $ = (id) => document.getElementById(id)

const state = {
  sessionId: null,
  info: null,
  dims: null, // [nx, ny, nz]
  affine: null, // raw voxel -> mm (4 x 4, rows)
  ct: null,
  pet: null,
  mask: null, // NVImage, uint8, the case's grid
  petRange: [0, PET_MIN_MAX],
  mip: null, // {value: Float32Array(nz * nx), argY: Int32Array(nz * nx)}
  mipPicture: null, // OffscreenCanvas(nx, nz): the MIP as shown
  busy: false,
  generation: 0, // counts openings: an older one stops when a newer one starts
  updates: 0,
  lesions: [],
  pointer: null
}

const nv = new Niivue({
  backColor: [0, 0, 0, 1],
  crosshairColor: [0.35, 0.55, 1, 1],
  show3Dcrosshair: false,
  isColorbar: false,
  dragAndDropEnabled: false,
  multiplanarShowRender: SHOW_RENDER.NEVER,
  isRadiologicalConvention: false,
  logLevel: 'warn'
})

// ---------------------------------------------------------------- HTTP

function apiKey () {
  return sessionStorage.getItem(KEY_STORAGE) || ''
}

function headers (extra = {}) {
  return { 'X-API-Key': apiKey(), 'X-QuantIF-API-Version': API_VERSION, ...extra }
}

async function api (method, path, body) {
  const init = { method, headers: headers() }
  if (body instanceof FormData) {
    init.body = body
  } else if (body !== undefined) {
    init.body = JSON.stringify(body)
    init.headers['Content-Type'] = 'application/json'
  }
  const response = await fetch(`${API}${path}`, init)
  if (!response.ok) {
    let detail = response.statusText
    try {
      const j = await response.json()
      detail = typeof j.detail === 'string' ? j.detail : JSON.stringify(j.detail)
    } catch (e) {}
    if (response.status === 503) {
      detail += ` (server busy; retry after ${response.headers.get('Retry-After') || '?'} s)`
    }
    throw new Error(`${response.status}: ${detail}`)
  }
  return response
}

// ---------------------------------------------------------------- page state

function setStatus (fields) {
  const el = $('status')
  for (const [k, v] of Object.entries(fields)) el.dataset[k] = String(v)
}

function showProgress (text, isError = false) {
  const el = $('progress')
  el.textContent = text
  el.classList.toggle('error', isError)
}

function showTiming (text, isError = false) {
  const el = $('timing')
  el.textContent = text
  el.classList.toggle('error', isError)
}

function setReady (ready) {
  for (const id of ['undo', 'reset', 'dl-nifti', 'dl-seg', 'dl-csv']) $(id).disabled = !ready
}

// ---------------------------------------------------------------- geometry

function affineOf (img) {
  return img.hdr.affine.map((row) => row.slice())
}

function voxToMm (xyz) {
  const a = state.affine
  return [0, 1, 2].map((r) => a[r][0] * xyz[0] + a[r][1] * xyz[1] + a[r][2] * xyz[2] + a[r][3])
}

function mmToVox (mm) {
  // inverse of the 3 x 3 part by cofactors, then the translation
  const a = state.affine
  const m = [[a[0][0], a[0][1], a[0][2]], [a[1][0], a[1][1], a[1][2]], [a[2][0], a[2][1], a[2][2]]]
  const c = (r, k) => m[(r + 1) % 3][(k + 1) % 3] * m[(r + 2) % 3][(k + 2) % 3] - m[(r + 1) % 3][(k + 2) % 3] * m[(r + 2) % 3][(k + 1) % 3]
  const det = m[0][0] * c(0, 0) + m[0][1] * c(0, 1) + m[0][2] * c(0, 2)
  const d = [mm[0] - a[0][3], mm[1] - a[1][3], mm[2] - a[2][3]]
  // inverse[i][j] = cofactor[j][i] / det
  return [0, 1, 2].map((i) => (c(0, i) * d[0] + c(1, i) * d[1] + c(2, i) * d[2]) / det)
}

function inImage (xyz) {
  return xyz.every((v, i) => v >= 0 && v < state.dims[i])
}

function centreOn (xyz) {
  nv.scene.crosshairPos = nv.mm2frac(voxToMm(xyz))
  nv.createOnLocationChange()
  nv.drawScene()
  drawMip()
}

function crosshairVoxel () {
  return mmToVox(nv.frac2mm(nv.scene.crosshairPos)).map(Math.round)
}

// CSS-pixel position, relative to the NiiVue canvas, of voxel `xyz` on the slice view `plane`
// ('axial', 'coronal' or 'sagittal'), with the crosshair moved there first; null when not shown.
function canvasPointOf (xyz, plane = 'axial') {
  centreOn(xyz)
  const type = { axial: SLICE_TYPE.AXIAL, coronal: SLICE_TYPE.CORONAL, sagittal: SLICE_TYPE.SAGITTAL }[plane]
  const hit = nv.frac2canvasPosWithTile(nv.mm2frac(voxToMm(xyz)), type)
  if (!hit) return null
  const dpr = nv.uiData.dpr || 1
  return [hit.pos[0] / dpr, hit.pos[1] / dpr]
}

// ---------------------------------------------------------------- mask updates

function base64Bytes (text) {
  const bin = atob(text)
  const out = new Uint8Array(bin.length)
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i)
  return out
}

async function inflate (bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('deflate'))
  return new Uint8Array(await new Response(stream).arrayBuffer())
}

async function applyMaskBox (box, b64) {
  if (!box || !b64) return
  const [[z0, z1], [y0, y1], [x0, x1]] = box
  const w = x1 - x0
  const bytes = await inflate(base64Bytes(b64))
  if (bytes.length !== (z1 - z0) * (y1 - y0) * w) {
    throw new Error(`mask box of ${bytes.length} bytes for box ${JSON.stringify(box)} (z, y, x)`)
  }
  const [nx, ny] = state.dims
  const img = state.mask.img
  let src = 0
  for (let z = z0; z < z1; z++) {
    for (let y = y0; y < y1; y++) {
      img.set(bytes.subarray(src, src + w), x0 + nx * (y + ny * z))
      src += w
    }
  }
}

function maskVoxels () {
  let n = 0
  const img = state.mask.img
  for (let i = 0; i < img.length; i++) n += img[i] ? 1 : 0
  return n
}

async function applyUpdate (update, roundTripS) {
  await applyMaskBox(update.box_zyx, update.mask_zlib_b64)
  nv.updateGLVolume()
  renderMip()
  drawMip()
  if (update.lesions) showLesions(update.lesions)
  state.updates += 1
  setStatus({
    updates: state.updates,
    lesions: state.lesions.length,
    maskVoxels: maskVoxels(),
    nInteractions: update.n_interactions ?? 0,
    lastSeconds: update.seconds ?? ''
  })
  if (update.seconds !== undefined) {
    const tiles = update.tiles_total ? `, ${update.tiles_run}/${update.tiles_total} tiles` : ''
    showTiming(`${update.seconds.toFixed(2)} s per click (server${tiles}, ${update.mode || ''}); ` +
      `${roundTripS.toFixed(2)} s round trip; ${update.n_interactions} interactions`)
  }
}

async function interact (path, body) {
  if (!state.sessionId || state.busy) return
  state.busy = true
  setStatus({ state: 'busy' })
  const t0 = performance.now()
  try {
    const response = await api('POST', `/sessions/${state.sessionId}/${path}`, body)
    const update = await response.json()
    await applyUpdate(update, (performance.now() - t0) / 1000)
    setStatus({ state: 'ready' })
  } catch (e) {
    showTiming(String(e.message || e), true)
    setStatus({ state: 'ready', error: String(e.message || e) })
  } finally {
    state.busy = false
  }
}

// ---------------------------------------------------------------- lesion table

function fmt (v, digits) {
  return typeof v === 'number' && Number.isFinite(v) ? v.toFixed(digits) : ''
}

function showLesions (lesions) {
  state.lesions = lesions
  $('lesion-count').textContent = String(lesions.length)
  const body = $('lesions').querySelector('tbody')
  body.replaceChildren()
  for (const lesion of lesions) {
    const tr = document.createElement('tr')
    tr.dataset.lesionId = String(lesion.id)
    for (const text of [String(lesion.id), fmt(lesion.volume_ml, 2), fmt(lesion.suv_max, 1), fmt(lesion.suv_mean, 1)]) {
      const td = document.createElement('td')
      td.textContent = text
      tr.appendChild(td)
    }
    const xyz = lesion.centroid_xyz || (lesion.centroid_zyx ? [...lesion.centroid_zyx].reverse() : null)
    if (xyz) tr.addEventListener('click', () => centreOn(xyz.map(Math.round)))
    body.appendChild(tr)
  }
}

// ---------------------------------------------------------------- PET MIP (coronal: max over y)

function computeMip () {
  const [nx, ny, nz] = state.dims
  const pet = state.pet.img
  const value = new Float32Array(nz * nx).fill(-Infinity)
  const argY = new Int32Array(nz * nx)
  for (let z = 0; z < nz; z++) {
    for (let y = 0; y < ny; y++) {
      const row = nx * (y + ny * z)
      for (let x = 0; x < nx; x++) {
        const v = pet[row + x]
        if (v > value[z * nx + x]) {
          value[z * nx + x] = v
          argY[z * nx + x] = y
        }
      }
    }
  }
  state.mip = { value, argY }
}

// hot colour map: black -> red -> yellow -> white over t in [0, 1]
function hot (t) {
  const c = Math.min(1, Math.max(0, t))
  return [Math.min(1, c * 3), Math.min(1, Math.max(0, c * 3 - 1)), Math.max(0, c * 3 - 2)]
}

// screen placement of the MIP: patient superior up, image x as NiiVue's coronal view shows it
function mipLayout () {
  const canvas = $('mip-canvas')
  const [nx, , nz] = state.dims
  const sx = Math.hypot(state.affine[0][0], state.affine[1][0], state.affine[2][0])
  const sz = Math.hypot(state.affine[0][2], state.affine[1][2], state.affine[2][2])
  const scale = Math.min(canvas.width / (nx * sx), canvas.height / (nz * sz))
  const w = nx * sx * scale
  const h = nz * sz * scale
  return {
    left: (canvas.width - w) / 2,
    top: (canvas.height - h) / 2,
    w,
    h,
    flipX: state.affine[0][0] < 0, // raw x towards patient left (RAS -x): shown right to left
    flipZ: state.affine[2][2] > 0 // raw z towards superior: top row is the last slice
  }
}

// the MIP picture (nx x nz pixels, as shown): PET in hot, lesion voxels anywhere along y in the mask colour;
// made again after each mask update, drawn (scaled, with the crosshair) on every view change
function renderMip () {
  const [nx, ny, nz] = state.dims
  const { value } = state.mip
  const mask = state.mask.img
  const image = new ImageData(nx, nz)
  const [lo, hi] = state.petRange
  const L = mipLayout()
  for (let z = 0; z < nz; z++) {
    for (let x = 0; x < nx; x++) {
      const [r, g, b] = hot((value[z * nx + x] - lo) / (hi - lo))
      let lesion = false
      for (let y = 0; y < ny && !lesion; y++) lesion = mask[x + nx * (y + ny * z)] !== 0
      const row = L.flipZ ? nz - 1 - z : z
      const col = L.flipX ? nx - 1 - x : x
      const o = 4 * (row * nx + col)
      image.data[o] = lesion ? MASK_RGB[0] : 255 * r
      image.data[o + 1] = lesion ? MASK_RGB[1] : 255 * g
      image.data[o + 2] = lesion ? MASK_RGB[2] : 255 * b
      image.data[o + 3] = 255
    }
  }
  const picture = new OffscreenCanvas(nx, nz)
  picture.getContext('2d').putImageData(image, 0, 0)
  state.mipPicture = picture
}

function drawMip () {
  if (!state.mipPicture) return
  const canvas = $('mip-canvas')
  const rect = canvas.getBoundingClientRect()
  if (rect.width > 0 && (canvas.width !== Math.round(rect.width) || canvas.height !== Math.round(rect.height))) {
    canvas.width = Math.round(rect.width)
    canvas.height = Math.round(rect.height)
  }
  const [nx, , nz] = state.dims
  const L = mipLayout()
  const ctx = canvas.getContext('2d')
  ctx.fillStyle = '#000'
  ctx.fillRect(0, 0, canvas.width, canvas.height)
  ctx.imageSmoothingEnabled = false
  ctx.drawImage(state.mipPicture, L.left, L.top, L.w, L.h)
  const [cx, , cz] = crosshairVoxel()
  const px = L.left + ((L.flipX ? nx - 1 - cx : cx) + 0.5) * L.w / nx
  const py = L.top + ((L.flipZ ? nz - 1 - cz : cz) + 0.5) * L.h / nz
  ctx.strokeStyle = 'rgba(90, 140, 255, 0.9)'
  ctx.beginPath()
  ctx.moveTo(px - 6, py); ctx.lineTo(px + 6, py); ctx.moveTo(px, py - 6); ctx.lineTo(px, py + 6)
  ctx.stroke()
}

function mipClick (event) {
  if (!state.mip) return
  const canvas = $('mip-canvas')
  const rect = canvas.getBoundingClientRect()
  const L = mipLayout()
  const [nx, , nz] = state.dims
  const u = Math.floor(((event.clientX - rect.left) * canvas.width / rect.width - L.left) / L.w * nx)
  const v = Math.floor(((event.clientY - rect.top) * canvas.height / rect.height - L.top) / L.h * nz)
  if (u < 0 || u >= nx || v < 0 || v >= nz) return
  const x = L.flipX ? nx - 1 - u : u
  const z = L.flipZ ? nz - 1 - v : v
  centreOn([x, state.mip.argY[z * nx + x], z])
}

// ---------------------------------------------------------------- clicks on the slices

function onPointerDown (event) {
  state.pointer = { x: event.clientX, y: event.clientY, button: event.button }
}

function onPointerUp (event) {
  const down = state.pointer
  state.pointer = null
  if (!down || down.button !== 0 || event.button !== 0 || !state.mask) return
  if (Math.hypot(event.clientX - down.x, event.clientY - down.y) > CLICK_SLOP_PX) return // a drag
  const rect = $('nv-canvas').getBoundingClientRect()
  const dpr = nv.uiData.dpr || 1
  const frac = nv.canvasPos2frac([(event.clientX - rect.left) * dpr, (event.clientY - rect.top) * dpr])
  if (!frac || frac[0] < 0) return // not on a slice view
  const xyz = mmToVox(nv.frac2mm(frac)).map(Math.round)
  if (!inImage(xyz)) return
  const kind = event.shiftKey || event.ctrlKey || event.metaKey ? 'background' : 'tumor'
  interact('clicks', { xyz, kind })
}

// ---------------------------------------------------------------- opening a case

async function loadImage (sessionId, which, colormap, calMin, calMax, opacity) {
  const response = await api('GET', `/sessions/${sessionId}/image/${which}`)
  const buffer = await response.arrayBuffer()
  return NVImage.new(buffer, `${which}.nii.gz`, colormap, opacity, null, calMin, calMax)
}

function petDisplayMax (img) {
  // the 99.9th percentile of a strided sample, at least PET_MIN_MAX SUV
  const data = img.img
  const step = Math.max(1, Math.floor(data.length / 200000))
  const sample = []
  for (let i = 0; i < data.length; i += step) sample.push(data[i])
  sample.sort((a, b) => a - b)
  return Math.max(PET_MIN_MAX, sample[Math.floor(0.999 * (sample.length - 1))] || 0)
}

async function pollUntilReady (sessionId, generation) {
  for (;;) {
    const info = await (await api('GET', `/sessions/${sessionId}`)).json()
    checkCurrent(generation)
    if (info.status === 'ready') return info
    if (info.status === 'failed') throw new Error(info.error || 'the case could not be opened')
    showProgress(`opening: ${info.stage || info.status} (${(info.elapsed_s ?? 0).toFixed(1)} s)`)
    setStatus({ stage: info.stage || '' })
    await new Promise((resolve) => setTimeout(resolve, POLL_MS))
  }
}

// Thrown in an opening that another one (a new open, a resume) replaced.
class Superseded extends Error {}

function checkCurrent (generation) {
  if (generation !== state.generation) throw new Superseded()
}

async function closeCurrent () {
  state.generation += 1
  const old = state.sessionId
  state.sessionId = null
  state.mip = null
  state.mipPicture = null
  state.mask = null
  setReady(false)
  if (nv.volumes.length) {
    for (const v of [...nv.volumes]) nv.removeVolume(v)
  }
  if (old) api('DELETE', `/sessions/${old}`).catch(() => {})
}

function clearView () {
  setStatus({ state: 'opening', updates: 0, lesions: 0, maskVoxels: 0, nInteractions: 0, error: '' })
  state.updates = 0
  showLesions([])
  showTiming('')
}

function showError (e) {
  showProgress(String(e.message || e), true)
  setStatus({ state: 'error', error: String(e.message || e) })
}

async function openCase (body) {
  const t0 = performance.now()
  try {
    await closeCurrent()
    clearView()
    showProgress('uploading')
    const generation = state.generation
    const opened = await (await api('POST', '/sessions', body)).json()
    checkCurrent(generation)
    await attach(opened.session_id, t0, generation)
  } catch (e) {
    if (!(e instanceof Superseded)) showError(e)
  }
}

// The caller's latest session on the server (one a --demo server opened, or this page's before a reload).
async function resumeSession () {
  if (state.sessionId || !apiKey()) return
  const generation = ++state.generation
  try {
    const { sessions } = await (await api('GET', '/sessions')).json()
    checkCurrent(generation)
    const open = (sessions || []).filter((s) => s.status !== 'failed')
    if (!open.length) return
    clearView()
    showProgress('resuming the open session')
    await attach(open[open.length - 1].session_id, performance.now(), generation)
  } catch (e) {
    if (!(e instanceof Superseded)) showError(e)
  }
}

// Show session `sessionId`: wait until it is ready, load its images and its mask; stop with Superseded as soon
// as another opening has started.
async function attach (sessionId, t0, generation) {
  state.sessionId = sessionId
  const info = await pollUntilReady(sessionId, generation)
  const tServer = performance.now()
  showProgress('loading the images')
  const ct = await loadImage(sessionId, 'ct', 'gray', CT_RANGE[0], CT_RANGE[1], 1)
  checkCurrent(generation)
  const pet = await loadImage(sessionId, 'pet', 'hot', 0, PET_MIN_MAX, PET_OPACITY)
  checkCurrent(generation)
  state.info = info
  state.ct = ct
  state.petRange = [0, petDisplayMax(pet)]
  pet.cal_min = state.petRange[0]
  pet.cal_max = state.petRange[1]
  state.pet = pet
  state.affine = affineOf(state.ct)
  state.dims = [state.ct.hdr.dims[1], state.ct.hdr.dims[2], state.ct.hdr.dims[3]]
  const mask = NVImage.zerosLike(state.ct, 'uint8')
  mask.name = 'mask'
  mask.setColormapLabel(MASK_LUT)
  mask.opacity = MASK_OPACITY
  state.mask = mask
  nv.addVolume(state.ct)
  nv.addVolume(pet)
  nv.addVolume(mask)
  const tImages = performance.now()
  nv.setSliceType(nv.sliceTypeMultiplanar)
  computeMip()
  const raw = await (await api('GET', `/sessions/${sessionId}/mask?format=raw`)).json()
  const lesions = await (await api('GET', `/sessions/${sessionId}/lesions`)).json()
  checkCurrent(generation)
  await applyUpdate({ ...raw, lesions: lesions.lesions, n_interactions: info.n_interactions ?? 0 }, 0)
  const m = info.model || {}
  const model = m.folder ? `${String(m.folder).split(/[\\/]/).filter(Boolean).pop()} (folds ${(m.folds || []).join(', ')})`
    : (info.model ? JSON.stringify(info.model) : '')
  $('session-info').textContent = `session ${info.session_id}\nshape (z, y, x) ${info.shape_zyx}\n` +
    `spacing ${(info.spacing_zyx_mm || []).map((s) => s.toFixed(2)).join(' x ')} mm\ntracer ${info.tracer}` +
    (info.routing_confidence != null ? ` (confidence ${info.routing_confidence.toFixed(2)})` : '') +
    (model ? `\nmodel ${model}` : '')
  const t1 = performance.now()
  state.timings = { server_s: (tServer - t0) / 1000, images_s: (tImages - tServer) / 1000, display_s: (t1 - tImages) / 1000 }
  showProgress(`ready in ${((t1 - t0) / 1000).toFixed(1)} s (server ${state.timings.server_s.toFixed(1)} s, ` +
    `images ${state.timings.images_s.toFixed(1)} s, display ${state.timings.display_s.toFixed(1)} s)`)
  setReady(true)
  $('dl-seg').disabled = !info.dicom // a DICOM-SEG references the DICOM series the case came from
  setStatus({ state: 'ready' })
}

function openUpload (event) {
  event.preventDefault()
  const form = new FormData()
  const zip = $('upload-zip').files[0]
  if (zip) {
    form.append('dicom_zip', zip)
  } else {
    const ct = $('upload-ct').files[0]
    const pet = $('upload-pet').files[0]
    if (!ct || !pet) {
      showProgress('choose a CT and a PET file, or a DICOM zip', true)
      return
    }
    form.append('ct', ct)
    form.append('pet', pet)
  }
  form.append('tracer', $('tracer').value)
  openCase(form)
}

function openPath (event) {
  event.preventDefault()
  const ct = $('path-ct').value.trim()
  const pet = $('path-pet').value.trim()
  if (!ct || !pet) {
    showProgress('give the CT and PET paths under the data root', true)
    return
  }
  openCase({ ct, pet, tracer: $('tracer').value })
}

// ---------------------------------------------------------------- downloads

const DOWNLOADS = { 'dl-nifti': ['nifti', 'mask.nii.gz'], 'dl-seg': ['dicom-seg', 'mask_seg.dcm'], 'dl-csv': ['csv', 'lesions.csv'] }

async function download (id) {
  const [format, suffix] = DOWNLOADS[id]
  try {
    const response = await api('GET', `/sessions/${state.sessionId}/mask?format=${format}`)
    const url = URL.createObjectURL(await response.blob())
    const a = document.createElement('a')
    a.href = url
    a.download = `quantif_${state.sessionId}_${suffix}`
    document.body.appendChild(a)
    a.click()
    a.remove()
    setTimeout(() => URL.revokeObjectURL(url), 10000)
  } catch (e) {
    showTiming(String(e.message || e), true)
  }
}

// ---------------------------------------------------------------- start

async function showServer () {
  // /version needs the key too: without one the line asks for it
  const el = $('server-info')
  try {
    const response = await fetch('version', { headers: headers() })
    if (response.status === 401) {
      el.textContent = 'enter the API key'
      return
    }
    const v = await response.json()
    el.textContent = `server ${v.package_version}, API ${v.api_version}`
    if (String(v.api_version) !== API_VERSION) {
      showProgress(`this page speaks API version ${API_VERSION}, the server ${v.api_version}: reload the page`, true)
    }
  } catch (e) {
    el.textContent = 'server not reachable'
  }
}

function useKey () {
  sessionStorage.setItem(KEY_STORAGE, $('api-key').value.trim())
  showServer()
  resumeSession()
}

function start () {
  $('api-key').value = apiKey()
  $('save-key').addEventListener('click', useKey)
  $('api-key').addEventListener('change', useKey)
  $('open-upload').addEventListener('submit', openUpload)
  $('open-path').addEventListener('submit', openPath)
  $('undo').addEventListener('click', () => interact('undo'))
  $('reset').addEventListener('click', () => interact('reset'))
  for (const id of Object.keys(DOWNLOADS)) $(id).addEventListener('click', () => download(id))
  $('mip-canvas').addEventListener('click', mipClick)
  const canvas = $('nv-canvas')
  canvas.addEventListener('pointerdown', onPointerDown, true)
  canvas.addEventListener('pointerup', onPointerUp, true)
  nv.onLocationChange = () => drawMip()
  nv.attachToCanvas(canvas)
  window.addEventListener('resize', () => drawMip())
  // a key in the address (quantif serve prints http://host:port/#key=...) is kept for this tab and taken out of
  // the address bar; the browser never sends the fragment to the server
  const fragment = new URLSearchParams(location.hash.slice(1))
  if (fragment.get('key')) {
    sessionStorage.setItem(KEY_STORAGE, fragment.get('key'))
    $('api-key').value = apiKey()
    history.replaceState(null, '', location.pathname + location.search)
  }
  useKey()
}

// for scripts and tests: the state and the coordinate helpers
window.quantifViewer = { state, nv, centreOn, canvasPointOf, crosshairVoxel }

start()
