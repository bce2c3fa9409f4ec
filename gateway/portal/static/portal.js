// Kanal employer portal. Plain JavaScript, no framework, no CDN.
// The page talks to the public employer API (/api/v1) with the employer's key
// and to /portal/api for what the API does not do (workbooks, PDF, sandbox
// bank, history). The key lives in sessionStorage: closing the tab forgets it.
"use strict";

const KEY_STORAGE = "kanal.portal.key";
const LANG_STORAGE = "kanal.portal.lang";
const XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";
// Workers whose protection is shown (and refreshed on every live update).
const WORKERS_SHOWN_MAX = 100;
// Parallel GET /api/v1/participants/{kpj} while refreshing protection.
const STATE_REQUESTS_IN_FLIGHT_MAX = 6;
const FIELDS = ["kpj", "nik", "name", "wage", "segment"];

const TEXT = {
  id: {
    skip: "Langsung ke isi",
    subtitle: "Portal pemberi kerja · BPJS Ketenagakerjaan",
    sandbox: "Mode sandbox",
    language: "Bahasa",
    signOut: "Keluar",
    welcomeTitle: "Bayar iuran pekerja Anda, lihat perlindungan mereka aktif",
    welcomeLead: "Unggah pekerja, kirim laporan upah bulanan, unduh tagihan, dan pantau perlindungan tiap pekerja.",
    signInTitle: "Masuk",
    apiKey: "Kunci API",
    apiKeyHint: "Kunci yang Anda terima saat mendaftar, diawali kanal_sk_.",
    signIn: "Masuk",
    registerTitle: "Daftar sebagai pemberi kerja",
    npp: "NPP (nomor pendaftaran perusahaan)",
    nppHint: "8 huruf atau angka, misalnya AB123456.",
    companyName: "Nama perusahaan",
    regency: "Kabupaten/kota",
    sizeClass: "Skala usaha",
    sizeMicro: "Mikro", sizeSmall: "Kecil", sizeMedium: "Menengah", sizeLarge: "Besar",
    riskClass: "Kelas risiko JKK",
    register: "Daftar",
    newKeyTitle: "Simpan kunci API Anda",
    newKeyLead: "Kunci ini hanya ditampilkan sekali. Simpan di tempat aman; Anda memerlukannya untuk masuk lagi.",
    newKey: "Kunci API baru Anda",
    copyKey: "Salin kunci",
    keyCopied: "Kunci disalin.",
    continue: "Lanjutkan ke portal",
    stepsNav: "Langkah",
    navWorkers: "1. Pekerja", navReport: "2. Laporan upah", navBill: "3. Tagihan", navProtection: "4. Perlindungan", navHistory: "5. Riwayat",
    workersTitle: "1. Unggah pekerja",
    workersLead: "Berkas CSV atau Excel (.xlsx) dengan kolom kpj, nik, name, wage, segment pada baris pertama.",
    file: "Berkas pekerja (.csv atau .xlsx)",
    modeLegend: "Jika ada baris yang salah",
    modeAll: "Jangan simpan apa pun sampai semua baris benar",
    modeAllHint: "Disarankan: daftar pekerja tetap utuh.",
    modeKeep: "Simpan baris yang benar, tampilkan yang salah",
    modeKeepHint: "Baris yang salah dapat diperbaiki di bawah lalu diunggah lagi.",
    upload: "Unggah",
    reviewTitle: "Periksa baris",
    reviewLead: "Nomor baris mengikuti lembar kerja Anda (judul kolom = baris 1). Perbaiki kolom yang ditandai, lalu unggah lagi.",
    colRow: "Baris", colName: "Nama", colWage: "Upah", colSegment: "Segmen", colProblems: "Masalah",
    reupload: "Unggah lagi baris yang diperbaiki",
    reviewLarge: "Berkas besar: hanya baris yang salah ditampilkan. Perbaiki di berkas Anda lalu unggah lagi, atau pilih \"Simpan baris yang benar\".",
    discard: "Buang",
    reportTitle: "2. Laporan upah bulanan",
    reportLead: "Laporkan upah bulan lalu; tagihan dibuat dari upah yang terdaftar.",
    period: "Periode (bulan)",
    submitReport: "Kirim laporan",
    billTitle: "3. Tagihan",
    billEmpty: "Belum ada tagihan dipilih. Kirim laporan upah atau pilih tagihan dari riwayat.",
    paymentCode: "Kode iuran",
    amountDue: "Jumlah tagihan",
    dueDate: "Jatuh tempo",
    payableUntil: "Berlaku sampai",
    status: "Status",
    totalsCaption: "Rincian per program",
    colProgram: "Program", colEmployer: "Pemberi kerja", colWorker: "Pekerja", colGovernment: "Pemerintah*", colBilled: "Ditagih",
    total: "Total",
    governmentNote: "* Bagian pemerintah (JKP) dicatat tetapi tidak ditagihkan.",
    downloadPdf: "Unduh tagihan (PDF)",
    payVirtual: "Bayar dengan bank virtual (sandbox)",
    protectionTitle: "4. Perlindungan pekerja",
    liveConnecting: "Menyambung ke siaran langsung…",
    liveOn: "Langsung: diperbarui saat pembayaran masuk",
    liveOff: "Siaran langsung terputus; menyambung lagi…",
    colProtection: "Perlindungan per program",
    historyTitle: "5. Riwayat pembayaran dan tunggakan",
    colAmount: "Jumlah", colPaid: "Dibayar", colActions: "Tindakan", colPeriod: "Periode",
    footer: "Kanal adalah simulator. Tidak ada uang sungguhan yang berpindah.",
    // dynamic
    row: "Baris",
    fieldNames: { kpj: "KPJ", nik: "NIK", name: "Nama", wage: "Upah", segment: "Segmen", row: "Baris", header: "Judul kolom", file: "Berkas", body: "Berkas" },
    chooseFile: "Pilih berkas .csv atau .xlsx terlebih dahulu.",
    wrongFileType: "Hanya berkas .csv atau .xlsx yang diterima.",
    uploading: "Mengunggah…",
    uploadSavedAll: (n) => `${n} pekerja tersimpan.`,
    uploadNothingSaved: (bad) => `${bad} baris salah; belum ada yang disimpan. Perbaiki baris yang ditandai lalu unggah lagi.`,
    uploadSomeSaved: (n, bad) => `${n} pekerja tersimpan; ${bad} baris salah belum disimpan. Perbaiki lalu unggah lagi.`,
    uploadNothingNew: "Tidak ada baris untuk disimpan.",
    signedInAs: (e) => `NPP ${e.npp} · ${e.regency_name} · program ${e.programs.join(", ")}`,
    signInFailed: "Kunci API tidak dikenal. Periksa lagi, atau daftar di bawah.",
    needKey: "Masukkan kunci API Anda.",
    registered: "Terdaftar. Simpan kunci API Anda sebelum melanjutkan.",
    required: "Wajib diisi.",
    billIssued: (code) => `Tagihan ${code} dibuat.`,
    statusOpen: "Belum dibayar", statusPaid: "Lunas", statusLate: "Terlambat", statusExpired: "Kedaluwarsa",
    lateFees: (amount) => `Termasuk denda keterlambatan ${amount} (2% per bulan atas tagihan sebelumnya yang terlambat).`,
    paying: "Bank virtual sedang membayar melalui SNAP…",
    paid: (amount, codes) => `Lunas: ${amount} dibayar oleh bank virtual melalui SNAP (${codes}). Perlindungan pekerja diperbarui secara langsung di bawah.`,
    payFailed: (detail) => `Pembayaran ditolak: ${detail}`,
    pdfReady: "PDF tagihan diunduh.",
    states: { none: "Belum terlindungi", active: "Aktif", grace: "Masa tenggang", lapsed: "Terputus" },
    protectedSummary: (p, n) => `${p} dari ${n} pekerja terlindungi.`,
    noWorkers: "Belum ada pekerja terdaftar.",
    moreWorkers: (shown, total) => `Menampilkan ${shown} dari ${total} pekerja.`,
    noBills: "Belum ada tagihan.",
    arrearsNone: "Tidak ada tunggakan.",
    arrearsSome: (n, amount) => `Tunggakan: ${n} tagihan lewat jatuh tempo, ${amount} termasuk denda berjalan.`,
    paidLateSome: (n, amount) => `${n} tagihan dibayar setelah jatuh tempo: denda ${amount} ditagihkan pada tagihan laporan upah berikutnya.`,
    monthsLate: (m, fee, charged) => `terlambat ${m} bulan; denda ${charged} sudah masuk tagihan berikutnya; denda berjalan ${fee}, ditagihkan pada tagihan laporan upah berikutnya; jika tagihan ini dibayar sebelum itu, denda sampai tanggal pembayaran`,
    expired: "kode kedaluwarsa",
    view: "Lihat",
    viewBill: (code) => `Lihat tagihan ${code}`,
    paidVia: (when, channel) => `${when} · ${channel}`,
    periodRequired: "Pilih bulan periode laporan.",
    networkError: "Tidak dapat menghubungi server. Coba lagi.",
    bpu: "BPU",
  },
  en: {
    skip: "Skip to content",
    subtitle: "Employer portal · BPJS Ketenagakerjaan",
    sandbox: "Sandbox mode",
    language: "Language",
    signOut: "Sign out",
    welcomeTitle: "Pay your workers' dues, watch their protection switch on",
    welcomeLead: "Upload your workers, submit the monthly wage report, download the bill and follow each worker's protection.",
    signInTitle: "Sign in",
    apiKey: "API key",
    apiKeyHint: "The key you received when you registered; it starts with kanal_sk_.",
    signIn: "Sign in",
    registerTitle: "Register as an employer",
    npp: "NPP (employer registration number)",
    nppHint: "8 letters or digits, for example AB123456.",
    companyName: "Company name",
    regency: "Regency or city",
    sizeClass: "Business size",
    sizeMicro: "Micro", sizeSmall: "Small", sizeMedium: "Medium", sizeLarge: "Large",
    riskClass: "JKK risk class",
    register: "Register",
    newKeyTitle: "Keep your API key",
    newKeyLead: "This key is shown only once. Keep it somewhere safe; you need it to sign in again.",
    newKey: "Your new API key",
    copyKey: "Copy key",
    keyCopied: "Key copied.",
    continue: "Continue to the portal",
    stepsNav: "Steps",
    navWorkers: "1. Workers", navReport: "2. Wage report", navBill: "3. Bill", navProtection: "4. Protection", navHistory: "5. History",
    workersTitle: "1. Upload workers",
    workersLead: "A CSV or Excel (.xlsx) file with the columns kpj, nik, name, wage, segment on the first row.",
    file: "Workers file (.csv or .xlsx)",
    modeLegend: "When some rows are wrong",
    modeAll: "Save nothing until every row is right",
    modeAllHint: "Recommended: your worker list stays whole.",
    modeKeep: "Save the valid rows, show the wrong ones",
    modeKeepHint: "Wrong rows can be fixed below and uploaded again.",
    upload: "Upload",
    reviewTitle: "Check the rows",
    reviewLead: "Row numbers are your spreadsheet's (the header is row 1). Fix the marked cells, then upload again.",
    colRow: "Row", colName: "Name", colWage: "Wage", colSegment: "Segment", colProblems: "Problems",
    reupload: "Upload the fixed rows again",
    reviewLarge: "A large file: only the wrong rows are shown. Fix them in your file and upload it again, or choose \"Save the valid rows\".",
    discard: "Discard",
    reportTitle: "2. Monthly wage report",
    reportLead: "Report last month's wages; the bill is computed from the registered wages.",
    period: "Period (month)",
    submitReport: "Submit report",
    billTitle: "3. Bill",
    billEmpty: "No bill selected yet. Submit a wage report or pick a bill from the history.",
    paymentCode: "Payment code",
    amountDue: "Amount due",
    dueDate: "Due date",
    payableUntil: "Payable until",
    status: "Status",
    totalsCaption: "Totals per program",
    colProgram: "Program", colEmployer: "Employer", colWorker: "Worker", colGovernment: "Government*", colBilled: "Billed",
    total: "Total",
    governmentNote: "* The government's JKP share is recorded, not billed.",
    downloadPdf: "Download the bill (PDF)",
    payVirtual: "Pay with the virtual bank (sandbox)",
    protectionTitle: "4. Worker protection",
    liveConnecting: "Connecting to the live stream…",
    liveOn: "Live: updates as payments arrive",
    liveOff: "Live stream interrupted; reconnecting…",
    colProtection: "Protection per program",
    historyTitle: "5. Payment history and arrears",
    colAmount: "Amount", colPaid: "Paid", colActions: "Actions", colPeriod: "Period",
    footer: "Kanal is a simulator. No real money moves.",
    row: "Row",
    fieldNames: { kpj: "KPJ", nik: "NIK", name: "Name", wage: "Wage", segment: "Segment", row: "Row", header: "Header", file: "File", body: "File" },
    chooseFile: "Choose a .csv or .xlsx file first.",
    wrongFileType: "Only .csv and .xlsx files are accepted.",
    uploading: "Uploading…",
    uploadSavedAll: (n) => `${n} worker(s) saved.`,
    uploadNothingSaved: (bad) => `${bad} row(s) are wrong; nothing was saved. Fix the marked rows and upload again.`,
    uploadSomeSaved: (n, bad) => `${n} worker(s) saved; ${bad} wrong row(s) were not. Fix them and upload again.`,
    uploadNothingNew: "No rows to save.",
    signedInAs: (e) => `NPP ${e.npp} · ${e.regency_name} · programs ${e.programs.join(", ")}`,
    signInFailed: "Unknown API key. Check it, or register below.",
    needKey: "Enter your API key.",
    registered: "Registered. Keep your API key before you continue.",
    required: "Required.",
    billIssued: (code) => `Bill ${code} issued.`,
    statusOpen: "Unpaid", statusPaid: "Paid", statusLate: "Overdue", statusExpired: "Expired",
    lateFees: (amount) => `Includes late fees of ${amount} (2% a month of an earlier late bill).`,
    paying: "The virtual bank is paying over SNAP…",
    paid: (amount, codes) => `Paid: ${amount} paid by the virtual bank over SNAP (${codes}). Worker protection updates live below.`,
    payFailed: (detail) => `Payment refused: ${detail}`,
    pdfReady: "Bill PDF downloaded.",
    states: { none: "Not protected", active: "Active", grace: "Grace period", lapsed: "Lapsed" },
    protectedSummary: (p, n) => `${p} of ${n} workers protected.`,
    noWorkers: "No workers registered yet.",
    moreWorkers: (shown, total) => `Showing ${shown} of ${total} workers.`,
    noBills: "No bills yet.",
    arrearsNone: "No arrears.",
    arrearsSome: (n, amount) => `Arrears: ${n} bill(s) past due, ${amount} including accrued late fees.`,
    paidLateSome: (n, amount) => `${n} bill(s) paid after the due date: ${amount} of late fees, charged on the next wage report's bill.`,
    monthsLate: (m, fee, charged) => `${m} month(s) late; ${charged} of late fees already on a later bill; ${fee} accrued since, charged on the next wage report's bill; if this bill is paid before then, what accrued until the payment`,
    expired: "code expired",
    view: "View",
    viewBill: (code) => `View bill ${code}`,
    paidVia: (when, channel) => `${when} · ${channel}`,
    periodRequired: "Choose the report's month.",
    networkError: "Cannot reach the server. Try again.",
    bpu: "BPU",
  },
};

const state = {
  lang: "id",
  key: null,
  config: null,
  employer: null,
  bill: null,
  review: [],          // rows under review: {label, kpj, nik, name, wage, segment, errors[]}
  reviewFixable: true, // false: a large file in all_or_nothing; fix it in the file
  lastUpload: null,    // {kind, args} of the last upload message, re-rendered on language change
  workers: [],
  coverage: new Map(), // kpj -> participant view
  history: null,
  payMessage: null,
  notice: null,
  stream: null,
  liveUpdates: 0,
  refreshing: false,
  refreshAgain: false,
};

const $ = (selector) => document.querySelector(selector);

function t(key, ...args) {
  const value = TEXT[state.lang][key] ?? TEXT.en[key] ?? key;
  return typeof value === "function" ? value(...args) : value;
}

function rupiah(amount) {
  // Indonesian grouping, no space after Rp: Rp1.101.222
  return "Rp" + new Intl.NumberFormat("id-ID", { maximumFractionDigits: 0 }).format(amount);
}

function locale() {
  return state.lang === "id" ? "id-ID" : "en-GB";
}

function formatDate(iso) {
  const [y, m, d] = iso.slice(0, 10).split("-").map(Number);
  return new Intl.DateTimeFormat(locale(), { dateStyle: "long", timeZone: "UTC" }).format(new Date(Date.UTC(y, m - 1, d)));
}

// Every time the portal shows is WIB (Asia/Pontianak, UTC+7), and says so.
function formatDateTime(iso) {
  return `${new Intl.DateTimeFormat(locale(), { dateStyle: "medium", timeStyle: "short", timeZone: "Asia/Pontianak" }).format(new Date(iso))} WIB`;
}

// A bill's expires_at is the start of a day in WIB (bill_expires_at); the
// last day a bank takes it is the day before, as the PDF prints it.
function lastPayableDay(expiresAt) {
  return new Intl.DateTimeFormat("en-CA", { timeZone: "Asia/Pontianak", year: "numeric", month: "2-digit", day: "2-digit" })
    .format(new Date(Date.parse(expiresAt) - 1));
}

function isExpired(bill) {
  return bill.status === "open" && Boolean(bill.expires_at) && Date.parse(bill.expires_at) <= Date.now();
}

function formatPeriod(period) {
  const [y, m] = period.split("-").map(Number);
  return new Intl.DateTimeFormat(locale(), { month: "long", year: "numeric", timeZone: "UTC" }).format(new Date(Date.UTC(y, m - 1, 1)));
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

// ------------------------------------------------------------------ API --

class ApiError extends Error {
  constructor(status, body) {
    super(body?.detail || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

async function api(path, { method = "GET", json, body, contentType, auth = true } = {}) {
  const headers = {};
  if (auth && state.key) headers.Authorization = `Bearer ${state.key}`;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (contentType) {
    headers["Content-Type"] = contentType;
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body });
  } catch (error) {
    throw new ApiError(0, { detail: t("networkError") });
  }
  const type = response.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await response.json() : null;
  if (!response.ok) throw new ApiError(response.status, data);
  return { status: response.status, data, response };
}

// A notice is kept as a function of the language, so the toggle re-words it.
function notify(message, bad = false) {
  state.notice = message ? { render: typeof message === "function" ? message : () => message, bad } : null;
  renderNotice();
}

function renderNotice() {
  const box = $("#notice");
  box.textContent = state.notice ? state.notice.render() : "";
  box.classList.toggle("bad", Boolean(state.notice && state.notice.bad));
}

function setFieldError(id, message) {
  const input = document.getElementById(id);
  const error = document.getElementById(`${id}-error`);
  if (!input || !error) return;
  if (message) {
    input.setAttribute("aria-invalid", "true");
    error.textContent = message;
    error.hidden = false;
  } else {
    input.removeAttribute("aria-invalid");
    error.textContent = "";
    error.hidden = true;
  }
}

function busy(button, on) {
  button.disabled = on;
  button.setAttribute("aria-busy", on ? "true" : "false");
}

// ----------------------------------------------------------- language ----

function applyLanguage(lang) {
  state.lang = lang;
  localStorage.setItem(LANG_STORAGE, lang);
  document.documentElement.lang = lang;
  document.title = lang === "id" ? "Kanal — Portal Pemberi Kerja" : "Kanal — Employer Portal";
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of document.querySelectorAll("[data-i18n-aria]")) node.setAttribute("aria-label", t(node.dataset.i18nAria));
  for (const button of document.querySelectorAll(".lang-btn")) {
    button.setAttribute("aria-pressed", button.dataset.lang === lang ? "true" : "false");
  }
  renderAll();
}

function renderAll() {
  renderNotice();
  if (state.employer) renderEmployer();
  renderUploadMessage();
  renderReview();
  if (state.bill) renderBill();
  renderPayMessage();
  renderWorkers();
  if (state.history) renderHistory();
  renderLive();
}

// ------------------------------------------------------- sign in / out ---

async function signIn(key, { quiet = false } = {}) {
  state.key = key;
  try {
    const { data } = await api("/portal/api/me");
    state.employer = data;
  } catch (error) {
    state.key = null;
    sessionStorage.removeItem(KEY_STORAGE);
    if (!quiet) setFieldError("api-key", error.status === 401 ? t("signInFailed") : error.message);
    return false;
  }
  sessionStorage.setItem(KEY_STORAGE, key);
  setFieldError("api-key", null);
  $("#api-key").value = "";
  $("#welcome").hidden = true;
  $("#new-key").hidden = true;
  $("#portal").hidden = false;
  $("#sign-out").hidden = false;
  notify("");
  renderEmployer();
  $("#employer-name").focus();
  await Promise.all([loadWorkers(), loadHistory()]);
  connectStream();
  return true;
}

function signOut() {
  sessionStorage.removeItem(KEY_STORAGE);
  if (state.stream) state.stream.close();
  Object.assign(state, { key: null, employer: null, bill: null, review: [], lastUpload: null, workers: [], history: null, payMessage: null, stream: null });
  state.coverage = new Map();
  $("#portal").hidden = true;
  $("#sign-out").hidden = true;
  $("#welcome").hidden = false;
  renderAll();
  $("#bill-view").hidden = true;
  $("#bill-empty").hidden = false;
  $("#api-key").focus();
}

function renderEmployer() {
  const e = state.employer;
  $("#employer-name").textContent = e.name;
  $("#employer-facts").textContent = t("signedInAs", e);
  $("#pay-virtual").hidden = !e.sandbox || !state.bill || state.bill.status !== "open";
}

async function onSignIn(event) {
  event.preventDefault();
  const key = $("#api-key").value.trim();
  if (!key) {
    setFieldError("api-key", t("needKey"));
    $("#api-key").focus();
    return;
  }
  const button = event.submitter || $("#signin-form button");
  busy(button, true);
  try {
    const ok = await signIn(key);
    if (!ok) $("#api-key").focus();
  } finally {
    busy(button, false);
  }
}

const REGISTER_FIELDS = { npp: "reg-npp", name: "reg-name", regency_code: "reg-regency", size_class: "reg-size", jkk_risk_class: "reg-risk" };

async function onRegister(event) {
  event.preventDefault();
  const form = event.target;
  for (const id of Object.values(REGISTER_FIELDS)) setFieldError(id, null);
  const payload = {
    npp: form.npp.value.trim().toUpperCase(),
    name: form.name.value.trim(),
    regency_code: form.regency_code.value,
    size_class: form.size_class.value,
    jkk_risk_class: Number(form.jkk_risk_class.value),
  };
  let missing = null;
  for (const [field, id] of Object.entries(REGISTER_FIELDS)) {
    if (payload[field] === "" || payload[field] === undefined) {
      setFieldError(id, t("required"));
      missing = missing || id;
    }
  }
  if (missing) {
    document.getElementById(missing).focus();
    return;
  }
  const button = event.submitter || form.querySelector("button");
  busy(button, true);
  try {
    const { data } = await api("/api/v1/employers", { method: "POST", json: payload, auth: false });
    $("#new-key-value").value = data.api_key;
    $("#new-key").hidden = false;
    notify(() => t("registered"));
    $("#new-key").focus();
  } catch (error) {
    let first = null;
    for (const problem of error.body.errors || []) {
      const id = REGISTER_FIELDS[problem.field];
      if (id) {
        setFieldError(id, problem.problem);
        first = first || id;
      }
    }
    if (first) document.getElementById(first).focus();
    else notify(error.message, true);
  } finally {
    busy(button, false);
  }
}

// ------------------------------------------------------------- upload ----

function fileContentType(file) {
  const name = file.name.toLowerCase();
  if (name.endsWith(".xlsx")) return XLSX_TYPE;
  if (name.endsWith(".csv")) return "text/csv";
  return null;
}

function selectedMode() {
  return document.querySelector('input[name="mode"]:checked').value;
}

async function onUpload(event) {
  event.preventDefault();
  setFieldError("upload-file", null);
  const input = $("#upload-file");
  const file = input.files[0];
  if (!file) {
    setFieldError("upload-file", t("chooseFile"));
    input.focus();
    return;
  }
  const type = fileContentType(file);
  if (!type) {
    setFieldError("upload-file", t("wrongFileType"));
    input.focus();
    return;
  }
  const button = event.submitter || $("#upload-form button[type=submit]");
  await sendRows(button, file, type, null);
}

function csvCell(value) {
  const text = String(value ?? "");
  return /[",\n\r]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

async function onReupload() {
  // The rows under review, as edited, go back as CSV through the same door.
  const rows = state.review.map((row) => {
    const copy = { ...row };
    for (const field of FIELDS) {
      const input = document.getElementById(`fix-${row.index}-${field}`);
      if (input) copy[field] = input.value.trim();
    }
    return copy;
  });
  const csv = [FIELDS.join(","), ...rows.map((r) => FIELDS.map((f) => csvCell(r[f])).join(","))].join("\n") + "\n";
  await sendRows($("#reupload"), new Blob([csv], { type: "text/csv" }), "text/csv", rows);
}

async function sendRows(button, body, contentType, submitted) {
  const mode = selectedMode();
  busy(button, true);
  state.lastUpload = { kind: "uploading", args: [] };
  renderUploadMessage();
  let data;
  try {
    ({ data } = await api(`/portal/api/participants/upload?mode=${mode}`, { method: "POST", body, contentType }));
  } catch (error) {
    if (error.status === 422 && Array.isArray(error.body.rows)) {
      data = error.body;
    } else {
      state.lastUpload = { kind: "error", args: [explain(error)] };
      renderUploadMessage();
      busy(button, false);
      $("#upload-result").focus();
      return;
    }
  }
  busy(button, false);
  // Rows as the server numbered them (data row n). A fresh file keeps its
  // sheet numbering (n + header rows); re-sent rows keep their first label.
  const source = submitted
    ? submitted.map((row, i) => ({ ...row, row: i + 1 }))
    : data.rows.map((row) => ({ ...row, label: row.row + data.header_rows }));
  // The API counts data rows ("duplicate of row 1"); speak in the page's numbers.
  const labelOf = new Map(source.map((row) => [row.row, row.label]));
  const byRow = new Map();
  for (const raw of data.errors) {
    const error = { ...raw, problem: raw.problem.replace(/\brow (\d+)/g, (m, n) => `row ${labelOf.get(Number(n)) ?? n}`) };
    if (!byRow.has(error.row)) byRow.set(error.row, []);
    byRow.get(error.row).push(error);
  }
  const judged = source.map((row, i) => ({ ...row, index: i, errors: byRow.get(row.row) || [] }));
  // A large file comes back with its wrong rows only: in all_or_nothing the
  // page cannot send the whole list back, so the fix happens in the file.
  state.reviewFixable = submitted !== null || data.rows_complete || data.mode === "keep_valid";
  if (data.errors.length === 0) {
    state.review = [];
    state.lastUpload = data.saved ? { kind: "uploadSavedAll", args: [data.saved] } : { kind: "uploadNothingNew", args: [] };
    $("#upload-file").value = "";
  } else if (data.mode === "keep_valid") {
    state.review = judged.filter((row) => row.errors.length).map((row, i) => ({ ...row, index: i }));
    state.lastUpload = { kind: "uploadSomeSaved", args: [data.saved, data.rejected] };
  } else {
    state.review = judged;
    state.lastUpload = { kind: "uploadNothingSaved", args: [data.rejected] };
  }
  renderUploadMessage();
  renderReview();
  if (data.saved) await loadWorkers();
  const firstBad = document.querySelector("#review-table input[aria-invalid=true]");
  $("#upload-result").focus();
  if (firstBad) firstBad.dataset.first = "true";
}

function explain(error) {
  const problems = (error.body.errors || []).map((p) => `${t("fieldNames")[p.field] || p.field}: ${p.problem}`);
  return problems.length ? problems.join("; ") : error.message;
}

function renderUploadMessage() {
  const box = $("#upload-result");
  const last = state.lastUpload;
  box.classList.remove("bad", "ok");
  if (!last) {
    box.textContent = "";
    return;
  }
  if (last.kind === "uploading") box.textContent = t("uploading");
  else if (last.kind === "error") box.textContent = last.args[0];
  else box.textContent = t(last.kind, ...last.args);
  box.classList.add(last.kind === "uploadSavedAll" ? "ok" : last.kind === "uploading" ? "ok" : "bad");
  if (last.kind === "uploadNothingNew") box.classList.replace("bad", "ok");
}

function renderReview() {
  const section = $("#review");
  const body = $("#review-table tbody");
  body.replaceChildren();
  section.hidden = state.review.length === 0;
  $("#reupload").hidden = !state.reviewFixable;
  $("#review-large").hidden = state.reviewFixable;
  const names = t("fieldNames");
  for (const row of state.review) {
    const bad = row.errors.length > 0;
    const tr = el("tr", { class: bad ? "row-bad" : null, "data-row": row.label });
    tr.append(el("td", { "data-label": t("colRow"), text: String(row.label) }));
    const fieldErrors = new Map();
    for (const error of row.errors) {
      if (!fieldErrors.has(error.field)) fieldErrors.set(error.field, []);
      fieldErrors.get(error.field).push(error.problem);
    }
    for (const field of FIELDS) {
      const label = { kpj: "KPJ", nik: "NIK", name: t("colName"), wage: t("colWage"), segment: t("colSegment") }[field];
      const td = el("td", { "data-label": label, "data-field": field });
      if (bad) {
        const id = `fix-${row.index}-${field}`;
        const problems = fieldErrors.get(field);
        const errorId = `${id}-error`;
        const input = el("input", {
          id,
          value: row[field] ?? "",
          "aria-label": `${t("row")} ${row.label}, ${names[field]}`,
          "aria-invalid": problems ? "true" : null,
          "aria-describedby": problems ? errorId : null,
          autocomplete: "off",
          spellcheck: "false",
          inputmode: field === "wage" || field === "kpj" || field === "nik" ? "numeric" : null,
        });
        td.append(input);
        if (problems) td.append(el("p", { id: errorId, class: "cell-error", text: problems.join("; ") }));
      } else {
        td.textContent = field === "wage" && /^\d+$/.test(row.wage) ? rupiah(Number(row.wage)) : row[field];
      }
      tr.append(td);
    }
    const list = el("ul");
    for (const error of row.errors) {
      // A cell's own error is written under the cell; here it is only named.
      const inCell = FIELDS.includes(error.field);
      list.append(el("li", { text: inCell ? names[error.field] : `${names[error.field] || error.field}: ${error.problem}` }));
    }
    tr.append(el("td", { class: "problems", "data-label": t("colProblems") }, row.errors.length ? list : "✓"));
    body.append(tr);
  }
}

// ------------------------------------------------------ wage report ------

async function onReport(event) {
  event.preventDefault();
  setFieldError("report-period", null);
  const period = $("#report-period").value;
  if (!/^\d{4}-\d{2}$/.test(period)) {
    setFieldError("report-period", t("periodRequired"));
    $("#report-period").focus();
    return;
  }
  const button = event.submitter || $("#report-form button");
  busy(button, true);
  try {
    const { data } = await api(`/api/v1/employers/${state.employer.npp}/wage-reports`, { method: "POST", json: { period } });
    showBill(data);
    notify(() => t("billIssued", data.payment_code));
    $("#bill-title").focus();
    await loadHistory();
  } catch (error) {
    setFieldError("report-period", explain(error));
    $("#report-period").focus();
  } finally {
    busy(button, false);
  }
}

function showBill(bill) {
  state.bill = bill;
  state.payMessage = null;
  renderBill();
  renderPayMessage();
}

function billStatus(bill) {
  if (bill.status === "paid") return ["statusPaid", "status-paid"];
  if (isExpired(bill)) return ["statusExpired", "status-expired"];
  // Today in WIB (a due date is a WIB day): "en-CA" writes YYYY-MM-DD.
  const today = new Date().toLocaleDateString("en-CA", { timeZone: "Asia/Pontianak" });
  return bill.due_date < today ? ["statusLate", "status-late"] : ["statusOpen", "status-open"];
}

function renderBill() {
  const bill = state.bill;
  $("#bill-empty").hidden = true;
  $("#bill-view").hidden = false;
  $("#bill-code").textContent = bill.payment_code;
  $("#bill-total").textContent = rupiah(bill.total_rupiah);
  $("#bill-period").textContent = formatPeriod(bill.period) + (bill.kpj ? ` · ${t("bpu")} ${bill.kpj}` : "");
  $("#bill-due").textContent = formatDate(bill.due_date);
  $("#bill-expires").textContent = bill.expires_at ? formatDate(lastPayableDay(bill.expires_at)) : "—";
  const [statusKey, statusClass] = billStatus(bill);
  const status = $("#bill-status");
  status.textContent = t(statusKey);
  status.className = statusClass;
  const body = $("#bill-totals tbody");
  body.replaceChildren();
  for (const total of bill.totals) {
    body.append(
      el("tr", {},
        el("th", { scope: "row", "data-label": t("colProgram"), text: total.program === "DENDA" ? (state.lang === "id" ? "Denda" : "Late fees") : total.program }),
        el("td", { class: "num", "data-label": t("colEmployer"), text: rupiah(total.employer_rupiah) }),
        el("td", { class: "num", "data-label": t("colWorker"), text: rupiah(total.worker_rupiah) }),
        el("td", { class: "num", "data-label": t("colGovernment"), text: rupiah(total.government_rupiah) }),
        el("td", { class: "num", "data-label": t("colBilled"), text: rupiah(total.billed_rupiah) }),
      ),
    );
  }
  $("#bill-total-foot").textContent = rupiah(bill.total_rupiah);
  const late = $("#bill-late");
  late.hidden = !bill.late_fees_rupiah;
  late.textContent = bill.late_fees_rupiah ? t("lateFees", rupiah(bill.late_fees_rupiah)) : "";
  $("#pay-virtual").hidden = !(state.employer && state.employer.sandbox && bill.status === "open");
}

async function onDownloadPdf() {
  const bill = state.bill;
  const button = $("#download-pdf");
  busy(button, true);
  try {
    const response = await fetch(`/portal/api/bills/${bill.payment_code}/pdf`, { headers: { Authorization: `Bearer ${state.key}` } });
    if (!response.ok) throw new ApiError(response.status, await response.json());
    const blob = await response.blob();
    const url = URL.createObjectURL(blob);
    const link = el("a", { href: url, download: `tagihan-${bill.payment_code}.pdf`, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    notify(() => t("pdfReady"));
  } catch (error) {
    notify(explain(error), true);
  } finally {
    busy(button, false);
  }
}

async function onPayVirtual() {
  const bill = state.bill;
  const button = $("#pay-virtual");
  busy(button, true);
  state.payMessage = { kind: "paying" };
  renderPayMessage();
  try {
    const { data } = await api(`/portal/api/bills/${bill.payment_code}/virtual-bank`, { method: "POST" });
    state.payMessage = { kind: "paid", data };
    const { data: fresh } = await api(`/api/v1/bills/${bill.payment_code}`);
    state.bill = fresh;
    renderBill();
    await loadHistory();
  } catch (error) {
    state.payMessage = { kind: "failed", detail: explain(error) };
  } finally {
    busy(button, false);
    renderPayMessage();
    // The pay button hides once paid: keep keyboard focus on the outcome.
    if (button.hidden) $("#pay-result").focus();
  }
}

function renderPayMessage() {
  const box = $("#pay-result");
  box.setAttribute("tabindex", "-1");
  box.classList.remove("bad", "ok");
  const message = state.payMessage;
  if (!message) {
    box.textContent = "";
    return;
  }
  if (message.kind === "paying") box.textContent = t("paying");
  else if (message.kind === "paid") {
    const codes = message.data.exchanges.map((x) => `${x.step} ${x.response_code}`).join(", ");
    box.textContent = t("paid", rupiah(message.data.paid_rupiah), codes);
    box.classList.add("ok");
  } else {
    box.textContent = t("payFailed", message.detail);
    box.classList.add("bad");
  }
}

// --------------------------------------------------------- protection ----

async function loadWorkers() {
  const { data } = await api(`/api/v1/employers/${state.employer.npp}/participants`);
  state.workers = data.participants;
  renderWorkers();
  await refreshStates();
}

async function refreshStates() {
  // One refresh at a time; a live update during a refresh asks for another.
  if (state.refreshing) {
    state.refreshAgain = true;
    return;
  }
  state.refreshing = true;
  try {
    do {
      state.refreshAgain = false;
      const queue = state.workers.slice(0, WORKERS_SHOWN_MAX).map((w) => w.kpj);
      const next = new Map();
      const worker = async () => {
        while (queue.length) {
          const kpj = queue.shift();
          try {
            const { data } = await api(`/api/v1/participants/${kpj}`);
            next.set(kpj, data);
          } catch (error) {
            if (state.coverage.has(kpj)) next.set(kpj, state.coverage.get(kpj));
          }
        }
      };
      await Promise.all(Array.from({ length: STATE_REQUESTS_IN_FLIGHT_MAX }, worker));
      if (!state.employer) return;
      state.coverage = next;
      renderWorkers();
    } while (state.refreshAgain);
  } finally {
    state.refreshing = false;
  }
}

function isProtected(view) {
  return view && view.coverage.some((c) => c.state === "active" || c.state === "grace");
}

function renderWorkers() {
  const body = $("#workers-table tbody");
  body.replaceChildren();
  const shown = state.workers.slice(0, WORKERS_SHOWN_MAX);
  for (const worker of shown) {
    const view = state.coverage.get(worker.kpj);
    const chips = el("ul", { class: "chips" });
    for (const c of view ? view.coverage : []) {
      const label = `${c.program}: ${t("states")[c.state]}`;
      chips.append(el("li", { class: `chip state-${c.state}`, "data-program": c.program, "data-state": c.state, text: label }));
    }
    body.append(
      el("tr", { "data-kpj": worker.kpj, "data-protected": isProtected(view) ? "true" : "false" },
        el("td", { class: "mono", "data-label": "KPJ", text: worker.kpj }),
        el("td", { "data-label": t("colName"), text: worker.name }),
        el("td", { class: "num", "data-label": t("colWage"), text: rupiah(worker.wage) }),
        el("td", { "data-label": t("colProtection") }, chips),
      ),
    );
  }
  const summary = $("#protection-summary");
  if (!state.workers.length) summary.textContent = t("noWorkers");
  else summary.textContent = t("protectedSummary", shown.filter((w) => isProtected(state.coverage.get(w.kpj))).length, shown.length);
  const more = $("#workers-more");
  more.hidden = state.workers.length <= WORKERS_SHOWN_MAX;
  more.textContent = more.hidden ? "" : t("moreWorkers", WORKERS_SHOWN_MAX, state.workers.length);
}

function connectStream() {
  if (state.stream) state.stream.close();
  const stream = new EventSource("/api/v1/stream/coverage");
  state.stream = stream;
  state.live = "connecting";
  renderLive();
  stream.onopen = () => {
    state.live = "on";
    renderLive();
  };
  stream.onerror = () => {
    state.live = "off";
    renderLive();
  };
  stream.addEventListener("coverage", () => {
    state.live = "on";
    state.liveUpdates += 1;
    $("#protection").dataset.liveUpdates = String(state.liveUpdates);
    renderLive();
    if (state.employer) refreshStates();
  });
}

function renderLive() {
  const text = { on: "liveOn", off: "liveOff" }[state.live] || "liveConnecting";
  $("#live-state").textContent = t(text);
  $("#live-dot").classList.toggle("on", state.live === "on");
}

// ------------------------------------------------------------ history ----

async function loadHistory() {
  const { data } = await api("/portal/api/history");
  state.history = data;
  renderHistory();
}

function renderHistory() {
  const data = state.history;
  const arrears = $("#arrears");
  arrears.classList.toggle("clear", data.arrears.length === 0);
  if (data.arrears.length === 0) {
    arrears.textContent = data.bills.length ? t("arrearsNone") : t("noBills");
  } else {
    arrears.replaceChildren(el("p", { text: t("arrearsSome", data.arrears.length, rupiah(data.arrears_total_rupiah)) }));
    const list = el("ul");
    for (const a of data.arrears) {
      const parts = [`${formatPeriod(a.period)} · ${a.payment_code} · ${rupiah(a.total_rupiah)}`, t("monthsLate", a.months_late, rupiah(a.late_fee_accrued_rupiah), rupiah(a.late_fee_charged_rupiah))];
      if (a.expired) parts.push(t("expired"));
      list.append(el("li", { text: parts.join(" — ") }));
    }
    arrears.append(list);
  }
  const paidLate = data.paid_late || [];
  if (paidLate.length) {
    arrears.classList.remove("clear");
    arrears.append(el("p", { text: t("paidLateSome", paidLate.length, rupiah(data.paid_late_fees_rupiah)) }));
  }
  const body = $("#history-table tbody");
  body.replaceChildren();
  const overdue = new Set(data.arrears.map((a) => a.payment_code));
  const expired = new Set(data.arrears.filter((a) => a.expired).map((a) => a.payment_code));
  for (const bill of data.bills) {
    const [statusKey, statusClass] = bill.status === "paid" ? ["statusPaid", "status-paid"]
      : expired.has(bill.payment_code) ? ["statusExpired", "status-expired"]
      : overdue.has(bill.payment_code) ? ["statusLate", "status-late"] : ["statusOpen", "status-open"];
    const view = el("button", { type: "button", class: "btn btn-small", "aria-label": t("viewBill", bill.payment_code), text: t("view") });
    view.addEventListener("click", () => openBill(bill.payment_code));
    body.append(
      el("tr", { "data-code": bill.payment_code, "data-status": bill.status },
        el("td", { "data-label": t("colPeriod"), text: formatPeriod(bill.period) + (bill.kpj ? ` · ${t("bpu")} ${bill.kpj}` : "") }),
        el("td", { class: "mono", "data-label": t("paymentCode"), text: bill.payment_code }),
        el("td", { class: "num", "data-label": t("colAmount"), text: rupiah(bill.total_rupiah) }),
        el("td", { "data-label": t("dueDate"), text: formatDate(bill.due_date) }),
        el("td", { class: statusClass, "data-label": t("status"), text: t(statusKey) }),
        el("td", { "data-label": t("colPaid"), text: bill.paid_at ? t("paidVia", formatDateTime(bill.paid_at), bill.channel) : "—" }),
        el("td", {}, view),
      ),
    );
  }
}

async function openBill(code) {
  try {
    const { data } = await api(`/api/v1/bills/${code}`);
    showBill(data);
    $("#bill-title").focus();
  } catch (error) {
    notify(explain(error), true);
  }
}

// --------------------------------------------------------------- start ---

async function start() {
  const saved = localStorage.getItem(LANG_STORAGE);
  const preferred = saved || ((navigator.language || "id").toLowerCase().startsWith("en") ? "en" : "id");
  for (const button of document.querySelectorAll(".lang-btn")) {
    button.addEventListener("click", () => applyLanguage(button.dataset.lang));
  }
  $("#signin-form").addEventListener("submit", onSignIn);
  $("#register-form").addEventListener("submit", onRegister);
  $("#copy-key").addEventListener("click", async () => {
    const input = $("#new-key-value");
    input.select();
    try {
      await navigator.clipboard.writeText(input.value);
    } catch (error) {
      document.execCommand("copy");
    }
    notify(() => t("keyCopied"));
  });
  $("#continue-key").addEventListener("click", () => signIn($("#new-key-value").value));
  $("#sign-out").addEventListener("click", signOut);
  $("#upload-form").addEventListener("submit", onUpload);
  $("#reupload").addEventListener("click", onReupload);
  $("#discard-review").addEventListener("click", () => {
    state.review = [];
    state.lastUpload = null;
    renderReview();
    renderUploadMessage();
    $("#upload-file").focus();
  });
  $("#report-form").addEventListener("submit", onReport);
  $("#download-pdf").addEventListener("click", onDownloadPdf);
  $("#pay-virtual").addEventListener("click", onPayVirtual);
  for (const table of ["#review-table", "#bill-totals", "#workers-table", "#history-table"]) $(table).classList.add("stack");

  const { data } = await api("/portal/api/config", { auth: false });
  state.config = data;
  $("#sandbox-badge").hidden = !data.sandbox;
  const regency = $("#reg-regency");
  for (const r of data.regencies) regency.append(el("option", { value: r.code, text: `${r.name} (${r.code})` }));
  $("#report-period").value = data.default_period;
  $("#report-period").max = data.current_period;
  applyLanguage(saved || preferred);
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) await signIn(key, { quiet: true });
  document.body.dataset.ready = "true";
}

start().catch((error) => notify(error.message || String(error), true));
