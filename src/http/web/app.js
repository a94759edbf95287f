// ringdfs web page: login, a file browser and a live picture of the ring.
// Plain DOM code, no framework. File names are user data: they only ever go
// into the page through textContent and attributes, never through innerHTML.
'use strict';

(function () {
  // ---- Shared state and small helpers ----

  const state = {
    user: null,
    csrf: null,
    folder: '',          // the folder shown, '' for the top
    entries: [],         // its entries as the server gave them
    sortKey: 'name',
    sortDir: 1,          // 1 ascending, -1 descending
    view: null,          // 'files' or 'ring'
    where: '',           // the file whose chunks the ring view draws
    pollTimer: null,
    pollGeneration: 0,
    dialogAction: null,  // what the open dialog's submit does
  };

  const $ = (id) => document.getElementById(id);
  const SVG_NS = 'http://www.w3.org/2000/svg';

  // Makes an element with attributes and children (strings become text).
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    for (const child of children) {
      node.append(child);
    }
    return node;
  }

  // Same for SVG.
  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    for (const child of children) {
      node.append(child);
    }
    return node;
  }

  function setAttrs(node, attrs) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) {
        node.setAttribute(key, value);
      }
    }
  }

  // The last segment of a whole path.
  function baseName(path) {
    return path.replace(/\/+$/, '').split('/').pop();
  }

  // A path's parent folder ('' for the top).
  function parentOf(path) {
    const cut = path.replace(/\/+$/, '').lastIndexOf('/');
    return cut < 0 ? '' : path.slice(0, cut);
  }

  function joinPath(folder, name) {
    return folder ? folder + '/' + name : name;
  }

  // A path for a URL: each segment percent-encoded, the slashes kept.
  function encodePath(path) {
    return path.split('/').map(encodeURIComponent).join('/');
  }

  // 12345678 -> "11.8 MiB"; one decimal, none when it is whole.
  function formatBytes(n) {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i += 1;
    }
    const text = i === 0 ? String(n) : n.toFixed(1).replace(/\.0$/, '');
    return text + ' ' + units[i];
  }

  // `modified` is Unix seconds (milliseconds are taken as they are).
  function formatDate(t) {
    if (typeof t !== 'number') {
      return '';
    }
    return new Date(t < 1e12 ? t * 1000 : t).toLocaleString();
  }

  // ---- The live region ----

  function say(text) {
    const status = $('status');
    status.classList.remove('error-line');
    status.textContent = text;
  }

  function sayError(text) {
    const status = $('status');
    status.classList.add('error-line');
    status.textContent = text;
  }

  // ---- Talking to the server ----

  // An error from the server: its status and its one line.
  class ApiError extends Error {
    constructor(status, line) {
      super(line);
      this.status = status;
    }
  }

  // The one line of a failed answer: the JSON `error`, else the text.
  function errorLine(status, body) {
    try {
      const parsed = JSON.parse(body);
      if (parsed && typeof parsed.error === 'string') {
        return parsed.error;
      }
    } catch (_) {
      // Not JSON: the text itself is the line.
    }
    const text = (body || '').trim().split('\n')[0];
    return text || 'the server answered ' + status;
  }

  // One request. A change carries the CSRF token; the answer is its JSON, or
  // null when it has none. A 401 outside the login means the session is gone.
  async function api(method, url, body) {
    const options = { method, credentials: 'same-origin', headers: {} };
    if (method !== 'GET') {
      options.headers['X-CSRF-Token'] = state.csrf || '';
    }
    if (body !== undefined) {
      options.headers['Content-Type'] = 'application/json';
      options.body = JSON.stringify(body);
    }
    const response = await fetch(url, options);
    const text = await response.text();
    if (!response.ok) {
      if (response.status === 401 && state.user && !url.startsWith('/web/login')) {
        showLogin();
      }
      throw new ApiError(response.status, errorLine(response.status, text));
    }
    const isJson = (response.headers.get('Content-Type') || '').includes('json');
    return isJson && text ? JSON.parse(text) : null;
  }

  // Runs an action, showing its failure (the server's line) in the live region.
  async function attempt(action) {
    try {
      await action();
    } catch (e) {
      sayError(e instanceof ApiError ? e.message : 'error: ' + e.message);
    }
  }

  // ---- Login and logout ----

  function showLogin() {
    state.user = null;
    state.csrf = null;
    stopPolling();
    for (const id of ['nav', 'whoami', 'files-view', 'ring-view']) {
      $(id).hidden = true;
    }
    $('login').hidden = false;
    $('login-user').focus();
  }

  function startSession(answer) {
    state.user = answer.user;
    state.csrf = answer.csrf;
    $('user-name').textContent = answer.user;
    $('login').hidden = true;
    $('login-error').hidden = true;
    $('nav').hidden = false;
    $('whoami').hidden = false;
    route();
  }

  async function login(event) {
    event.preventDefault();
    const error = $('login-error');
    error.hidden = true;
    try {
      const answer = await api('POST', '/web/login', {
        user: $('login-user').value,
        password: $('login-password').value,
      });
      $('login-password').value = '';
      say('');
      startSession(answer);
    } catch (e) {
      error.textContent = e instanceof ApiError ? e.message : 'error: ' + e.message;
      error.hidden = false;
    }
  }

  async function logout() {
    await attempt(async () => {
      await api('POST', '/web/logout');
      showLogin();
      say('logged out');
    });
  }

  // On load: an open session goes straight to the files, else the form.
  async function checkSession() {
    try {
      startSession(await api('GET', '/web/session'));
    } catch (_) {
      showLogin();
    }
  }

  // ---- Routing: #/files/FOLDER/ and #/ring[/FILE] ----

  function route() {
    if (!state.user) {
      return;
    }
    const hash = location.hash || '#/files/';
    if (hash.startsWith('#/ring')) {
      state.where = decodeURIComponent(hash.slice('#/ring/'.length));
      fillWhereSelect();
      showView('ring');
    } else {
      const rest = hash.startsWith('#/files/') ? hash.slice('#/files/'.length) : '';
      state.folder = decodeURIComponent(rest).replace(/\/+$/, '');
      showView('files');
      loadFolder();
    }
  }

  function showView(view) {
    state.view = view;
    $('files-view').hidden = view !== 'files';
    $('ring-view').hidden = view !== 'ring';
    for (const name of ['files', 'ring']) {
      const tab = $('tab-' + name);
      if (name === view) {
        tab.setAttribute('aria-current', 'page');
      } else {
        tab.removeAttribute('aria-current');
      }
    }
    startPolling();
  }

  function folderHash(folder) {
    return '#/files/' + (folder ? encodePath(folder) + '/' : '');
  }

  // ---- Files: listing, breadcrumbs, sorting ----

  async function loadFolder() {
    const folder = state.folder;
    renderCrumbs();
    await attempt(async () => {
      const base = '/files/' + (folder ? encodePath(folder) + '/' : '');
      let entries = [];
      let next = null;
      do {
        const url = next === null ? base : base + '?after=' + encodeURIComponent(next);
        const page = await api('GET', url);
        entries = entries.concat(page.entries);
        next = page.next;
      } while (next !== null && next !== undefined);
      if (folder === state.folder) {
        state.entries = entries;
        renderRows();
      }
    });
    loadUsage();
  }

  function renderCrumbs() {
    const crumbs = $('crumbs');
    crumbs.replaceChildren();
    const parts = state.folder ? state.folder.split('/') : [];
    const top = el('a', { href: folderHash('') }, 'My files');
    crumbs.append(top);
    parts.forEach((part, i) => {
      crumbs.append(el('span', { class: 'sep', 'aria-hidden': 'true' }, '/'));
      const path = parts.slice(0, i + 1).join('/');
      const link = el('a', { href: folderHash(path) }, part);
      if (i === parts.length - 1) {
        link.setAttribute('aria-current', 'page');
      }
      crumbs.append(link);
    });
    if (!parts.length) {
      top.setAttribute('aria-current', 'page');
    }
  }

  // Folders first, then by the chosen column.
  function sortedEntries() {
    const key = state.sortKey;
    const value = (e) => (key === 'name' ? baseName(e.name).toLowerCase() : e[key] || 0);
    return state.entries.slice().sort((a, b) => {
      if (a.type !== b.type) {
        return a.type === 'folder' ? -1 : 1;
      }
      const x = value(a);
      const y = value(b);
      return (x < y ? -1 : x > y ? 1 : 0) * state.sortDir;
    });
  }

  function setSort(key) {
    state.sortDir = state.sortKey === key ? -state.sortDir : 1;
    state.sortKey = key;
    renderRows();
  }

  function renderSortHeaders() {
    for (const th of document.querySelectorAll('#file-table th[data-key]')) {
      if (th.dataset.key === state.sortKey) {
        th.setAttribute('aria-sort', state.sortDir > 0 ? 'ascending' : 'descending');
      } else {
        th.removeAttribute('aria-sort');
      }
    }
  }

  function renderRows() {
    renderSortHeaders();
    const rows = sortedEntries().map(fileRow);
    $('file-rows').replaceChildren(...rows);
    $('empty').hidden = rows.length > 0;
    fillWhereSelect();
  }

  // One row: name (a folder is a link), size, date, and its actions.
  function fileRow(entry) {
    const name = baseName(entry.name);
    const isFolder = entry.type === 'folder';
    const nameCell = el('td', { class: 'col-name' });
    if (isFolder) {
      nameCell.append(el('a', { href: folderHash(entry.name), class: 'folder-link' }, name));
    } else {
      nameCell.append(el('span', { class: 'file-name' }, name));
      if (entry.healthy === false) {
        nameCell.append(el('span', { class: 'unhealthy' }, 'missing copies'));
      }
    }
    const size = isFolder ? '' : formatBytes(entry.size);
    return el('tr', { 'data-path': entry.name, 'data-type': entry.type },
      nameCell,
      el('td', { class: 'col-size', title: isFolder ? null : entry.size + ' bytes' }, size),
      el('td', { class: 'col-date' }, formatDate(entry.modified)),
      el('td', { class: 'col-actions' }, rowActions(entry, name, isFolder)));
  }

  function rowActions(entry, name, isFolder) {
    const box = el('div', { class: 'row-actions' });
    const button = (label, what, handler) => {
      const b = el('button', { type: 'button', class: what, 'aria-label': label + ' ' + name }, label);
      b.addEventListener('click', () => handler(entry));
      box.append(b);
    };
    if (!isFolder) {
      box.append(el('a', {
        href: '/files/' + encodePath(entry.name) + '?download',
        download: '',
        class: 'button download',
        'aria-label': 'Download ' + name,
      }, 'Download'));
    }
    button('Rename', 'rename', openRename);
    if (!isFolder) {
      button('Share', 'share', openShare);
      button('Where', 'where', (e) => { location.hash = '#/ring/' + encodePath(e.name); });
    }
    button('Delete', 'delete', openDelete);
    return box;
  }

  // ---- Usage against the quota ----

  async function loadUsage() {
    try {
      const usage = await api('GET', '/web/usage');
      $('usage').textContent = usage.quota === null || usage.quota === undefined
        ? formatBytes(usage.used) + ' used, no quota'
        : formatBytes(usage.used) + ' of ' + formatBytes(usage.quota);
    } catch (e) {
      $('usage').textContent = '';
    }
  }

  // ---- Uploads: the button and drag and drop, one XHR and bar per file ----

  const MAX_PARALLEL = 3;
  const uploadQueue = [];
  let uploadsRunning = 0;

  function queueUploads(files) {
    for (const file of files) {
      const item = uploadItem(file);
      $('uploads').append(item.li);
      uploadQueue.push({ file, folder: state.folder, item });
    }
    pumpUploads();
  }

  // The list item for one upload: name, progress bar, state text.
  function uploadItem(file) {
    const bar = el('progress', { max: '100', value: '0', 'aria-label': 'Uploading ' + file.name });
    const stateText = el('span', { class: 'state' }, 'waiting');
    const li = el('li', { 'data-name': file.name, 'data-state': 'waiting' },
      el('span', { class: 'name' }, file.name), bar, stateText);
    return { li, bar, stateText };
  }

  function pumpUploads() {
    while (uploadsRunning < MAX_PARALLEL && uploadQueue.length) {
      uploadsRunning += 1;
      sendFile(uploadQueue.shift()).finally(() => {
        uploadsRunning -= 1;
        pumpUploads();
      });
    }
  }

  // Sends the File object itself, so the browser streams it from disk.
  function sendFile({ file, folder, item }) {
    const path = joinPath(folder, file.name);
    item.li.dataset.state = 'sending';
    item.stateText.textContent = '0%';
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      xhr.open('PUT', '/files/' + encodePath(path));
      xhr.setRequestHeader('X-CSRF-Token', state.csrf || '');
      xhr.setRequestHeader('Content-Type', file.type || 'application/octet-stream');
      xhr.upload.addEventListener('progress', (e) => {
        if (e.lengthComputable) {
          const percent = Math.floor((e.loaded / e.total) * 100);
          item.bar.value = Math.min(percent, 99);
          item.stateText.textContent = item.bar.value + '%';
        }
      });
      xhr.addEventListener('load', () => {
        if (xhr.status >= 200 && xhr.status < 300) {
          finishUpload(item, 'done', 'done');
          say('uploaded ' + file.name);
          if (folder === state.folder && state.view === 'files') {
            loadFolder();
          }
        } else {
          finishUpload(item, 'failed', 'failed');
          sayError(file.name + ': ' + errorLine(xhr.status, xhr.responseText));
        }
        resolve();
      });
      xhr.addEventListener('error', () => {
        finishUpload(item, 'failed', 'failed');
        sayError(file.name + ': the upload was cut off');
        resolve();
      });
      xhr.send(file);
    });
  }

  function finishUpload(item, stateName, text) {
    item.li.dataset.state = stateName;
    item.stateText.textContent = text;
    if (stateName === 'done') {
      item.bar.value = 100;
    }
    // A finished line stays a while, then goes.
    setTimeout(() => item.li.remove(), stateName === 'done' ? 15000 : 60000);
  }

  function setUpDrop() {
    const zone = $('drop');
    const hasFiles = (e) => e.dataTransfer && Array.from(e.dataTransfer.types).includes('Files');
    zone.addEventListener('dragover', (e) => {
      if (hasFiles(e)) {
        e.preventDefault();
        e.dataTransfer.dropEffect = 'copy';
        zone.classList.add('over');
      }
    });
    zone.addEventListener('dragleave', (e) => {
      if (!zone.contains(e.relatedTarget)) {
        zone.classList.remove('over');
      }
    });
    zone.addEventListener('drop', (e) => {
      zone.classList.remove('over');
      if (hasFiles(e)) {
        e.preventDefault();
        queueUploads(Array.from(e.dataTransfer.files));
      }
    });
  }

  // ---- Dialogs: rename, delete, share, new folder ----
  // A modal <dialog> keeps the focus inside and closes on Escape. Submitting
  // closes it and runs the action that opened it.

  function openDialog(id, action, focusId) {
    state.dialogAction = action;
    const dialog = $(id);
    dialog.showModal();
    if (focusId) {
      $(focusId).focus();
    }
  }

  function setUpDialogs() {
    for (const dialog of document.querySelectorAll('dialog')) {
      dialog.querySelector('.cancel').addEventListener('click', () => dialog.close());
      dialog.querySelector('form').addEventListener('submit', (e) => {
        e.preventDefault();
        dialog.close();
        const action = state.dialogAction;
        state.dialogAction = null;
        if (action) {
          attempt(action);
        }
      });
    }
  }

  // The path a folder entry is addressed by (with its trailing slash).
  function entryUrl(entry) {
    return '/files/' + encodePath(entry.name) + (entry.type === 'folder' ? '/' : '');
  }

  function openRename(entry) {
    const input = $('rename-to');
    const name = baseName(entry.name);
    $('rename-from').textContent = entry.name;
    input.value = name;
    openDialog('rename-dialog', async () => {
      const to = joinPath(parentOf(entry.name), input.value.trim());
      if (!input.value.trim() || to === entry.name) {
        return;
      }
      await api('POST', '/web/rename', { from: entry.name, to });
      say('renamed ' + name + ' to ' + baseName(to));
      loadFolder();
    }, 'rename-to');
    // Select the name without its extension, as file managers do.
    const dot = name.lastIndexOf('.');
    input.setSelectionRange(0, dot > 0 && entry.type === 'file' ? dot : name.length);
  }

  function openDelete(entry) {
    const kind = entry.type === 'folder' ? 'the folder' : '';
    $('delete-question').textContent = 'Delete ' + kind + (kind ? ' ' : '') + entry.name + '?';
    openDialog('delete-dialog', async () => {
      await api('DELETE', entryUrl(entry));
      say('deleted ' + baseName(entry.name));
      loadFolder();
    }, null);
    $('delete-dialog').querySelector('.cancel').focus();
  }

  function openShare(entry) {
    $('share-path').textContent = entry.name;
    $('share-user').value = '';
    $('share-access').value = 'read';
    showCurrentShares(entry.name);
    openDialog('share-dialog', async () => {
      const user = $('share-user').value.trim();
      const access = $('share-access').value;
      await api('POST', '/web/share', { path: entry.name, with: user, access });
      say(access === 'none'
        ? 'stopped sharing ' + baseName(entry.name) + ' with ' + user
        : 'shared ' + baseName(entry.name) + ' with ' + user + ' (' + access + ')');
    }, 'share-user');
  }

  // Who already has this path, in the share dialog.
  async function showCurrentShares(path) {
    const line = $('share-current');
    line.textContent = '';
    try {
      const answer = await api('GET', '/web/shares');
      const mine = answer.shares.filter((s) => s.owner === state.user && s.path === path);
      line.textContent = mine.length
        ? 'Shared with ' + mine.map((s) => s.user + ' (' + s.access + ')').join(', ')
        : 'Not shared yet.';
    } catch (_) {
      // The dialog works without this line.
    }
  }

  function openMkdir() {
    const input = $('mkdir-name');
    input.value = '';
    const folder = state.folder;
    openDialog('mkdir-dialog', async () => {
      const name = input.value.trim();
      if (!name) {
        return;
      }
      await api('PUT', '/files/' + encodePath(joinPath(folder, name)) + '/');
      say('made folder ' + name);
      loadFolder();
    }, 'mkdir-name');
  }

  // ---- Polling: the ring every 2 s on its view, the health line slower ----

  // Each start begins a new generation; a tick of an older one stops.
  function startPolling() {
    stopPolling();
    const generation = state.pollGeneration;
    const tick = async () => {
      await pollRing();
      if (generation === state.pollGeneration && state.user) {
        state.pollTimer = setTimeout(tick, state.view === 'ring' ? 2000 : 10000);
      }
    };
    tick();
  }

  function stopPolling() {
    clearTimeout(state.pollTimer);
    state.pollTimer = null;
    state.pollGeneration += 1;
  }

  async function pollRing() {
    let ring;
    try {
      ring = await api('GET', '/web/ring');
    } catch (e) {
      $('health').textContent = 'ring: ' + e.message;
      $('health').classList.add('bad');
      return;
    }
    renderHealth(ring.servers);
    if (state.view === 'ring') {
      let where = null;
      if (state.where) {
        try {
          where = await api('GET', '/web/where?path=' + encodeURIComponent(state.where));
        } catch (e) {
          sayError(state.where + ': ' + e.message);
          state.where = '';
        }
      }
      renderRing(ring.servers, where);
    }
  }

  // The files view's one line: how many servers are up.
  function renderHealth(servers) {
    const up = servers.filter((s) => s.state !== 'down').length;
    const health = $('health');
    health.textContent = 'ring: ' + up + ' of ' + servers.length + ' servers up';
    health.classList.toggle('bad', up < servers.length);
  }

  // ---- The ring picture ----

  const CX = 260;          // the picture is 520 by 440
  const CY = 220;
  const RADIUS = 135;
  const MARK = 7;          // a chunk mark's radius
  const MARKS_PER_ROW = 4;
  const MAX_MARKS = 16;    // per server; the server list counts them all

  // Where the i-th of n servers sits: clockwise from the top.
  function placeOf(i, n) {
    const angle = -Math.PI / 2 + (2 * Math.PI * i) / n;
    return { angle, x: CX + RADIUS * Math.cos(angle), y: CY + RADIUS * Math.sin(angle) };
  }

  // The chunks each server should hold, from the where answer.
  function chunksByServer(where) {
    const held = new Map();
    for (const chunk of (where && where.chunks) || []) {
      for (const copy of chunk.copies) {
        const presence = copy.present === true ? 'present' : copy.present === false ? 'missing' : 'unknown';
        if (!held.has(copy.server)) {
          held.set(copy.server, []);
        }
        held.get(copy.server).push({ chunk: chunk.chunk, presence });
      }
    }
    return held;
  }

  function renderRing(servers, where) {
    const picture = $('ring-svg');
    const title = picture.querySelector('title');
    const held = chunksByServer(where);
    picture.replaceChildren(title, svg('circle', { class: 'track', cx: CX, cy: CY, r: RADIUS }));
    servers.forEach((server, i) => {
      picture.append(serverGroup(server, placeOf(i, servers.length), held.get(server.name) || []));
    });
    renderServerList(servers, held);
    renderWhereInfo(where);
  }

  // A server's dot, its name and state, and the marks of the chosen file's chunks.
  function serverGroup(server, place, chunks) {
    const group = svg('g', { class: 'server', 'data-name': server.name, 'data-state': server.state });
    group.append(svg('circle', { class: 'dot state-' + server.state, cx: place.x, cy: place.y, r: 13 }));
    // The labels sit outside the circle, the chunk marks inside it.
    const cos = Math.cos(place.angle);
    const sin = Math.sin(place.angle);
    const lx = place.x + cos * 26;
    const ly = place.y + sin * 26 + (sin < -0.5 ? -26 : sin > 0.5 ? 10 : -10);
    const anchor = cos > 0.3 ? 'start' : cos < -0.3 ? 'end' : 'middle';
    const line = (cls, dy, text) =>
      group.append(svg('text', { class: cls, x: lx, y: ly + dy, 'text-anchor': anchor }, text));
    line('label', 0, server.name);
    line('sublabel state-label', 14, server.state);
    if (server.state !== 'down') {
      line('sublabel', 28, (server.files || 0) + ' files · ' + formatBytes(server.bytes || 0));
    }
    chunks.slice(0, MAX_MARKS).forEach((c, k) => group.append(chunkMark(place, c, k)));
    return group;
  }

  // The k-th chunk mark of a server: rows running from the dot to the centre,
  // each row read left to right (or top to bottom).
  function chunkMark(place, chunk, k) {
    const row = Math.floor(k / MARKS_PER_ROW);
    const col = k % MARKS_PER_ROW - (MARKS_PER_ROW - 1) / 2;
    const cos = Math.cos(place.angle);
    const sin = Math.sin(place.angle);
    const flip = -sin < -1e-9 || (Math.abs(sin) < 1e-9 && cos < 0) ? -1 : 1;
    const inward = 28 + row * (2 * MARK + 3);
    const across = flip * col * (2 * MARK + 3);
    const x = place.x - cos * inward - sin * across;
    const y = place.y - sin * inward + cos * across;
    const mark = svg('g', { class: 'chunk', 'data-chunk': chunk.chunk, 'data-presence': chunk.presence });
    mark.append(svg('title', {}, 'chunk ' + chunk.chunk + ': ' + chunk.presence));
    mark.append(svg('circle', { class: 'mark ' + chunk.presence, cx: x, cy: y, r: MARK }));
    mark.append(svg('text', { class: 'mark-num ' + chunk.presence, x, y }, String(chunk.chunk)));
    return mark;
  }

  // The same servers as text: state, what they store, heal progress.
  function renderServerList(servers, held) {
    const items = servers.map((server) => {
      const li = el('li', { class: 'border-' + server.state, 'data-name': server.name, 'data-state': server.state });
      li.append(el('strong', {}, server.name), ' ',
        el('span', { class: 'state state-' + server.state }, server.state), ' ',
        el('span', { class: 'detail' }, server.addr || ''));
      li.append(el('div', { class: 'detail' }, storesLine(server, held.get(server.name))));
      const heal = healLine(server);
      if (heal) {
        li.append(el('div', { class: 'detail heal' }, heal));
      }
      if (server.error) {
        li.append(el('div', { class: 'detail' }, server.error));
      }
      return li;
    });
    $('ring-list').replaceChildren(...items);
  }

  function storesLine(server, chunks) {
    if (server.state === 'down' && !server.files) {
      return 'not answering';
    }
    let line = (server.files || 0) + ' files, ' + (server.chunks || 0) + ' chunks, ' +
      formatBytes(server.bytes || 0) + ', ' + Math.round((server.share || 0) * 100) + '% of the ring';
    if (chunks && chunks.length) {
      line += '; ' + chunks.length + ' chunks of the chosen file';
    }
    return line;
  }

  function healLine(server) {
    const heal = server.heal;
    if (!heal) {
      return '';
    }
    if (heal.missing > 0) {
      return 'healing: ' + heal.missing + ' chunks to fetch (' + heal.copied + ' copied)';
    }
    if (server.state === 'healing') {
      return 'healing: ' + heal.copied + ' chunks copied';
    }
    return heal.copied > 0 ? 'healed: ' + heal.copied + ' chunks copied since it started' : '';
  }

  // The chosen file's chunks as text, with a legend for the marks.
  function renderWhereInfo(where) {
    const box = $('where-info');
    box.replaceChildren();
    if (!where) {
      return;
    }
    box.append(el('h2', {}, where.path + ' (' + formatBytes(where.size) + ', ' + where.chunks.length + ' chunks)'));
    const legend = el('div', { class: 'legend' });
    for (const [cls, text] of [['present', 'stored'], ['missing', 'missing'], ['unknown', 'server not answering']]) {
      legend.append(el('span', {}, el('span', { class: 'swatch ' + cls, 'aria-hidden': 'true' }), text));
    }
    const list = el('ol');
    for (const chunk of where.chunks) {
      const copies = chunk.copies.map((c) =>
        c.server + ' ' + (c.present === true ? 'stored' : c.present === false ? 'missing' : 'unknown'));
      list.append(el('li', {}, 'chunk ' + chunk.chunk + ': ' + copies.join(', ')));
    }
    box.append(legend, list);
  }

  // The ring view's file choice: the files of the folder last listed.
  function fillWhereSelect() {
    const select = $('where-select');
    const files = state.entries.filter((e) => e.type === 'file').map((e) => e.name);
    if (state.where && !files.includes(state.where)) {
      files.unshift(state.where);
    }
    const options = files.map((name) => el('option', { value: name }, name));
    select.replaceChildren(el('option', { value: '' }, '(no file)'), ...options);
    select.value = state.where;
  }

  // ---- Wiring ----

  function init() {
    $('login-form').addEventListener('submit', login);
    $('logout').addEventListener('click', logout);
    $('upload-input').addEventListener('change', (e) => {
      queueUploads(Array.from(e.target.files));
      e.target.value = '';
    });
    $('mkdir').addEventListener('click', openMkdir);
    for (const th of document.querySelectorAll('#file-table th[data-key]')) {
      th.querySelector('button').addEventListener('click', () => setSort(th.dataset.key));
    }
    $('where-select').addEventListener('change', (e) => {
      location.hash = e.target.value ? '#/ring/' + encodePath(e.target.value) : '#/ring';
    });
    setUpDrop();
    setUpDialogs();
    window.addEventListener('hashchange', route);
    checkSession();
  }

  init();
}());
