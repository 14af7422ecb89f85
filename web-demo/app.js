// app.js — the apura demo page: city search, live mayor and councillor results, national roll-up.

import { ApuraClient } from './apura.js';

const $ = (sel, root = document) => root.querySelector(sel);
const h = (tag, attrs = {}, ...children) => {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') el.className = v;
    else if (k === 'style') el.style.cssText = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) el.setAttribute(k, v === true ? '' : v);
  }
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
};

// --- formatting (pt-BR) --------------------------------------------------------------------------

const int = (n) => Math.round(n).toLocaleString('pt-BR');
const pct = (n) => n.toLocaleString('pt-BR', { minimumFractionDigits: 2, maximumFractionDigits: 2 }) + '%';
const pct1 = (n) => n.toLocaleString('pt-BR', { minimumFractionDigits: 1, maximumFractionDigits: 1 }) + '%';

/**
 * Share of sections counted, precise enough to never read "0,0%" once votes are in: one decimal
 * from 1 %, two below, "< 0,01%" for less (or for 0 beside counted votes).
 */
function counted(p, hasVotes = false, digits = 1) {
  if (p >= 1 || (p === 0 && !hasVotes)) return digits === 2 ? pct(p) : pct1(p);
  if (p >= 0.01) return pct(p);
  return '< ' + pct(0.01);
}

/** Initials of a ballot name: "JOÃO DA SILVA" → "JS". */
function initials(name) {
  const words = (name ?? '').split(/\s+/).filter((w) => w && !/^(da|das|de|do|dos|e)$/i.test(w));
  return ((words[0]?.[0] ?? '') + (words.length > 1 ? words.at(-1)[0] : '')).toUpperCase() || '?';
}

/** A placeholder portrait drawn here (no network): the initials on the party colour. */
function initialsAvatar(name, color) {
  const svg =
    `<svg xmlns="http://www.w3.org/2000/svg" width="96" height="96" viewBox="0 0 96 96">` +
    `<rect width="96" height="96" fill="${color}"/>` +
    `<circle cx="48" cy="112" r="44" fill="#fff" fill-opacity=".18"/>` +
    `<text x="48" y="58" text-anchor="middle" font-family="Arial,Helvetica,sans-serif" font-size="34" font-weight="700" fill="#fff">` +
    `${initials(name).replace(/[<&>]/g, '')}</text></svg>`;
  return 'data:image/svg+xml;charset=utf-8,' + encodeURIComponent(svg);
}

/**
 * The candidate's photo: the document's `photo` when it is an http(s) URL, otherwise (the
 * simulator names a file, not a URL) or when it fails to load, a placeholder with the initials.
 */
function photo(c, color, cls = 'photo') {
  const img = h('img', { class: cls, alt: displayName(c.name), width: 48, height: 48, decoding: 'async' });
  setPhoto(img, c, color);
  return img;
}

function setPhoto(img, c, color) {
  const url = /^https?:\/\//.test(c.photo ?? '') ? c.photo : null;
  const key = `${url ?? ''}|${c.name}|${color}`;
  if (img.dataset.key === key) return;
  img.dataset.key = key;
  img.alt = displayName(c.name);
  img.onerror = () => {
    img.onerror = null;
    img.dataset.photo = 'initials';
    img.src = initialsAvatar(c.name, color);
  };
  img.dataset.photo = url ? 'feed' : 'initials';
  img.src = url ?? initialsAvatar(c.name, color);
}

/** "há 3 s", "há 2 min", "há 1 h" from a Unix-ms instant. */
function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `há ${s} s`;
  if (s < 3600) return `há ${Math.floor(s / 60)} min`;
  return `há ${Math.floor(s / 3600)} h`;
}

/** Fold accents and punctuation away: "São João d'Aliança" → "sao joao d alianca". */
function fold(s) {
  return s
    .normalize('NFD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, ' ')
    .trim();
}

/** Ballot names arrive in capitals: "JOÃO DA SILVA" → "João da Silva"; mixed case is kept. */
function displayName(name) {
  if (name !== name.toUpperCase()) return name;
  return name
    .toLowerCase()
    .split(' ')
    .map((w, i) => (i > 0 && /^(da|das|de|do|dos|e)$/.test(w) ? w : w.charAt(0).toUpperCase() + w.slice(1)))
    .join(' ');
}

// Party colours for documents that carry none; anything else gets a stable colour from its name.
const PARTY_COLORS = {
  PT: '#c4122d', PL: '#1f3f8f', MDB: '#2e9e48', PSD: '#f0a500', PP: '#3a78c2', UNIÃO: '#1c4b9c',
  UNIAO: '#1c4b9c', REPUBLICANOS: '#385e7e', PSDB: '#0a5ca8', PSB: '#e5542a', PDT: '#d62d34',
  PSOL: '#f3b700', PODE: '#3bb4c1', PCdoB: '#a50e12', CIDADANIA: '#d4145a', NOVO: '#f26a21',
  SOLIDARIEDADE: '#ef6f21', SD: '#ef6f21', AVANTE: '#2bb3a1', PRD: '#284e9e', REDE: '#36a397',
  PV: '#2c8c3f', AGIR: '#5b2a86', DC: '#ab7c24', MOBILIZA: '#e08a1e', PCO: '#923d00', PSTU: '#ca4242',
};
const PALETTE = ['#5470c6', '#91cc75', '#d6a21e', '#ee6666', '#3ba272', '#9a60b4', '#ea7ccc', '#3d8fb4', '#b86b3c'];
const seenColors = new Map(); // party -> the colour the feed last gave its candidates
function partyColor(party, given) {
  if (given && /^#[0-9a-f]{6}$/i.test(given)) {
    seenColors.set(party, given);
    return given;
  }
  if (seenColors.has(party)) return seenColors.get(party);
  if (PARTY_COLORS[party]) return PARTY_COLORS[party];
  let hash = 0;
  for (const ch of party ?? '') hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
  return PALETTE[hash % PALETTE.length];
}

// --- numbers that move ---------------------------------------------------------------------------

const still = matchMedia('(prefers-reduced-motion: reduce)').matches;

/** Show `value` in `el` with `fmt`; when it changes, count up to it and flash. */
function setNumber(el, value, fmt) {
  const old = el._value;
  el._value = value;
  el.dataset.value = value;
  if (old === value && el.textContent) return;
  if (old === undefined || still) {
    el.textContent = fmt(value);
    return;
  }
  flash(el);
  const start = performance.now();
  cancelAnimationFrame(el._raf);
  const step = (t) => {
    const k = Math.min(1, (t - start) / 700);
    el.textContent = fmt(old + (value - old) * (1 - (1 - k) ** 3));
    if (k < 1) el._raf = requestAnimationFrame(step);
  };
  el._raf = requestAnimationFrame(step);
  // rAF sleeps in hidden tabs: make sure the final value lands anyway.
  clearTimeout(el._done);
  el._done = setTimeout(() => (el.textContent = fmt(el._value)), 800);
}

function flash(el) {
  el.classList.remove('flash');
  void el.offsetWidth; // restart the animation
  el.classList.add('flash');
}

/** Reorder keyed children of `list` to `nodes`, sliding each from its old place (FLIP). */
function reorder(list, nodes) {
  const before = new Map([...list.children].map((n) => [n, n.getBoundingClientRect().top]));
  nodes.forEach((n) => list.append(n));
  [...list.children].forEach((n) => !nodes.includes(n) && n.remove());
  if (still) return;
  for (const n of nodes) {
    const top = before.get(n);
    const dy = top === undefined ? 0 : top - n.getBoundingClientRect().top;
    if (!dy) continue;
    n.animate([{ transform: `translateY(${dy}px)` }, { transform: 'none' }], { duration: 450, easing: 'ease-out' });
  }
}

// --- state ----------------------------------------------------------------------------------------

const params = new URLSearchParams(location.search);
const client = new ApuraClient({ transport: params.get('transport') ?? 'auto' });
const state = {
  cities: [], // index entries with a folded name
  byRoute: new Map(), // "sp/sao-paulo" -> entry
  city: null,
  offCity: null,
  mayor: null,
  council: null,
  councilAll: false,
  brazil: null,
  status: { state: 'connecting' },
};

// --- connection status ------------------------------------------------------------------------------

// --- where the data come from ---------------------------------------------------------------------

const SOURCE_TEXT = {
  simulation: 'Dados: simulação do apura (não são resultados reais), distribuída pelo apura.',
  tse: 'Dados: apuração oficial do TSE, distribuída pelo apura.',
  consolidated: 'Dados: arquivos consolidados da apuração do TSE, distribuídos pelo apura.',
};

/** The `brazil` document says which source fed the data; the page shows it, never guesses. */
function renderSource(source) {
  const sim = source === 'simulation';
  document.body.dataset.source = source ?? '';
  $('#sim-label').hidden = !sim;
  $('#source-text').textContent = `${SOURCE_TEXT[source] ?? 'Dados distribuídos pelo apura.'} Percentuais sobre votos válidos.`;
}

const TRANSPORT_NAMES = { sse: 'ao vivo', ws: 'ao vivo (WebSocket)', poll: 'consulta periódica' };

function renderStatus() {
  const s = state.status;
  const box = $('#status');
  box.dataset.state = s.state;
  box.dataset.transport = s.transport ?? '';
  let text;
  if (s.state === 'connected') text = `conectado · ${TRANSPORT_NAMES[s.transport] ?? s.transport}`;
  else if (s.state === 'reconnecting') text = 'reconectando…';
  else if (s.state === 'stale') text = `reconectando · dados de ${ago(s.since)}`;
  else if (s.state === 'closed') text = 'desconectado';
  else text = 'conectando…';
  $('.label', box).textContent = text;
}

client.on('status', (s) => {
  state.status = s;
  renderStatus();
});

client.on('error', (e) => {
  if (!e.topic) return;
  const box = e.topic.startsWith('councillors-') ? $('#council-body') : e.topic.startsWith('mayors-') ? $('#mayor-list') : null;
  if (box) box.replaceChildren(h('p', { class: 'empty' }, 'Resultado indisponível no momento.'));
});

// --- search ----------------------------------------------------------------------------------------------

const UFS = new Set('ac al am ap ba ce df es go ma mg ms mt pa pb pe pi pr rj rn ro rr rs sc se sp to'.split(' '));

/** Up to `limit` cities matching `query`, best first; a trailing UF ("campinas sp") narrows. */
function searchCities(query, limit = 8) {
  let q = fold(query);
  if (!q) return [];
  let uf = null;
  const words = q.split(' ');
  if (words.length > 1 && UFS.has(words.at(-1))) {
    uf = words.pop().toUpperCase();
    q = words.join(' ');
  }
  const scored = [];
  for (const c of state.cities) {
    if (uf && c.uf !== uf) continue;
    const n = c.folded;
    const score = n === q ? 0 : n.startsWith(q) ? 1 : n.includes(' ' + q) ? 2 : n.includes(q) ? 3 : -1;
    if (score >= 0) scored.push([score, c]);
  }
  scored.sort(
    ([sa, a], [sb, b]) => sa - sb || b.capital - a.capital || a.name.length - b.name.length || a.name.localeCompare(b.name, 'pt-BR'),
  );
  return scored.slice(0, limit).map(([, c]) => c);
}

function setupSearch() {
  const input = $('#search');
  const list = $('#suggestions');
  let items = [];
  let active = -1;
  const close = () => {
    list.hidden = true;
    input.setAttribute('aria-expanded', 'false');
    input.removeAttribute('aria-activedescendant');
  };
  const highlight = (i) => {
    active = i;
    [...list.children].forEach((li, j) => li.setAttribute('aria-selected', String(j === i)));
    if (i >= 0) input.setAttribute('aria-activedescendant', `sug-${i}`);
  };
  const choose = (c) => {
    close();
    input.value = '';
    input.blur();
    location.hash = `#/${c.uf.toLowerCase()}/${c.slug}`;
  };
  const mark = (name) => {
    // Bold the matched part, found on the folded name (same length for Latin letters).
    const q = fold(input.value).split(' ').filter((w) => !UFS.has(w) || fold(name).includes(w)).join(' ');
    const i = fold(name).indexOf(q);
    if (!q || i < 0 || fold(name).length !== name.length) return name;
    return [name.slice(0, i), h('mark', {}, name.slice(i, i + q.length)), name.slice(i + q.length)];
  };
  input.addEventListener('input', () => {
    items = searchCities(input.value);
    if (!input.value.trim()) return close();
    list.replaceChildren(
      ...(items.length
        ? items.map((c, i) =>
            h(
              'li',
              { id: `sug-${i}`, role: 'option', 'aria-selected': 'false', onmousedown: (e) => (e.preventDefault(), choose(c)) },
              h('span', { class: 'sug-name' }, mark(c.name)),
              h('span', { class: 'sug-uf' }, c.uf),
              c.capital ? h('span', { class: 'sug-cap' }, 'capital') : null,
            ),
          )
        : [h('li', { class: 'none' }, 'Nenhum município encontrado')]),
    );
    list.hidden = false;
    input.setAttribute('aria-expanded', 'true');
    highlight(items.length ? 0 : -1);
  });
  input.addEventListener('keydown', (e) => {
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      e.preventDefault();
      if (!items.length) return;
      highlight((active + (e.key === 'ArrowDown' ? 1 : items.length - 1)) % items.length);
    } else if (e.key === 'Enter' && items[active]) {
      e.preventDefault();
      choose(items[active]);
    } else if (e.key === 'Escape') close();
  });
  input.addEventListener('blur', close);
}

// --- routing: #/sp/sao-paulo ----------------------------------------------------------------------------

function route() {
  const m = /^#\/([a-z]{2})\/([a-z0-9-]+)$/.exec(location.hash);
  const city = m ? state.byRoute.get(`${m[1]}/${m[2]}`) : null;
  if (city !== state.city) showCity(city);
}

function showCity(city) {
  state.offCity?.();
  state.offCity = null;
  state.city = city;
  state.mayor = state.council = null;
  state.councilAll = false;
  const section = $('#city');
  if (!city) {
    section.hidden = true;
    document.title = 'Apuração em tempo real · apura';
    return;
  }
  document.title = `${city.name} (${city.uf}) · Apuração · apura`;
  section.hidden = false;
  $('#city-name').replaceChildren(city.name, ' ', h('span', { class: 'uf' }, city.uf));
  $('#city-kicker').textContent = city.capital ? 'Capital · Eleição municipal' : 'Eleição municipal';
  const pctEl = $('#city-pct');
  pctEl._value = undefined;
  pctEl.textContent = '–';
  delete pctEl.dataset.value;
  $('#city-sections').textContent = '';
  $('#city-bar').style.width = '0%';
  $('#city-updated').textContent = '';
  $('#city-final').hidden = true;
  $('#mayor-list').replaceChildren(h('li', { class: 'loading' }, 'Carregando…'));
  $('#mayor-totals').replaceChildren();
  $('#council-body').replaceChildren(h('p', { class: 'loading' }, 'Carregando…'));
  $('#council-meta').textContent = '';
  $('#council-more').hidden = true;
  const topics = city.topics ?? [];
  const mayors = topics.find((t) => t.startsWith('mayors-'));
  const councillors = topics.find((t) => t.startsWith('councillors-'));
  const why = noElection(city);
  $('#city .progress').hidden = !mayors && !councillors;
  $('#mayor-round').textContent = '';
  $('#mayor-runoff').hidden = true;
  if (!mayors) $('#mayor-list').replaceChildren(h('li', { class: 'empty explain' }, why?.mayor ?? 'Sem resultado para prefeito neste município.'));
  if (!councillors) $('#council-body').replaceChildren(h('p', { class: 'empty explain' }, why?.council ?? 'Sem resultado para vereador neste município.'));
  const wanted = [mayors, councillors].filter(Boolean);
  if (wanted.length) {
    state.offCity = client.subscribe(wanted, (doc) => {
      if (doc.topic === mayors) renderMayor(doc);
      else renderCouncil(doc);
    });
  }
  // The search box first, then the city: the sticky header covers neither (scroll-margin-top).
  $('.search').scrollIntoView({ behavior: still ? 'auto' : 'smooth', block: 'start' });
}

const FERNANDO_DE_NORONHA = 2605459;

/** Why a place of the index has no municipal race, where the law says so. */
function noElection(city) {
  if (city.uf === 'DF') {
    return {
      mayor: 'O Distrito Federal não se divide em municípios e não elege prefeito: Brasília é governada pelo governador do DF, eleito nas eleições gerais.',
      council: 'Não há vereadores no DF: a Câmara Legislativa, de deputados distritais, é eleita nas eleições gerais.',
    };
  }
  if (city.ibge === FERNANDO_DE_NORONHA) {
    return {
      mayor: 'Fernando de Noronha é um distrito estadual de Pernambuco: não elege prefeito; o administrador-geral é nomeado pelo governo do estado.',
      council: 'Não há câmara de vereadores: os moradores elegem o Conselho Distrital, fora da eleição municipal.',
    };
  }
  return null;
}

// --- mayor race --------------------------------------------------------------------------------------

const candKey = (c) => `${c.number ?? ''}:${c.name}`;

function statusMark(c) {
  if (c.elected || c.status === 'elected') return h('span', { class: 'mark elected' }, 'Eleito');
  if (c.status === 'second_round') return h('span', { class: 'mark second' }, '2º turno');
  if (c.status === 'substitute') return h('span', { class: 'mark sub' }, 'Suplente');
  return null;
}

function renderMayor(doc) {
  state.mayor = doc;
  const p = doc.progress;
  $('#city-bar').style.width = `${p.percent}%`;
  const votes = doc.candidates.some((c) => c.votes > 0);
  setNumber($('#city-pct'), p.percent, (v) => counted(v, votes, 2));
  $('#city-sections').textContent =
    p.sections_total != null ? `${int(p.sections_counted ?? 0)} de ${int(p.sections_total)} seções` : '';
  $('#city-updated').dataset.published = doc.published_at;
  $('#city-updated').title = new Date(doc.published_at).toLocaleString('pt-BR');
  const sim = state.brazil?.source === 'simulation';
  $('#city-source').textContent = doc.source_time
    ? `${sim ? 'Simulação' : 'Dados do TSE'} das ${doc.source_time.slice(11, 16)}`
    : '';
  $('#city-final').hidden = !doc.final;
  $('#mayor-round').textContent = `${doc.round ?? 1}º turno`;
  const runoff = doc.candidates.filter((c) => c.status === 'second_round');
  $('#mayor-runoff').hidden = runoff.length < 2;
  $('#mayor-runoff').textContent =
    runoff.length >= 2 ? `Vai para o 2º turno: ${runoff.map((c) => `${displayName(c.name)} (${c.party})`).join(' × ')}` : '';
  tick();

  const list = $('#mayor-list');
  const existing = new Map([...list.querySelectorAll('li.cand')].map((li) => [li.dataset.key, li]));
  const nodes = doc.candidates.map((c, i) => {
    const key = candKey(c);
    let li = existing.get(key);
    if (!li) {
      li = h(
        'li',
        { class: 'cand', 'data-key': key },
        h('div', { class: 'cand-head' },
          h('img', { class: 'photo', width: 48, height: 48, decoding: 'async', alt: '' }),
          h('span', { class: 'cand-who' }, h('span', { class: 'cand-name' }), ' ', h('span', { class: 'party' })),
          h('span', { class: 'cand-mark' }),
          h('span', { class: 'cand-pct num' }),
        ),
        h('div', { class: 'bar' }, h('span')),
        h('div', { class: 'cand-votes' }, h('span', { class: 'votes num' }), ' votos'),
      );
    }
    const color = partyColor(c.party, c.color);
    li.style.setProperty('--c', color);
    li.classList.toggle('lead', i === 0 && c.votes > 0);
    li.classList.toggle('invalid', c.valid === false);
    setPhoto($('.photo', li), c, color);
    $('.cand-name', li).textContent = displayName(c.name);
    $('.party', li).textContent = c.number ? `${c.party} · ${c.number}` : c.party;
    $('.party', li).title = c.party;
    $('.cand-mark', li).replaceChildren(statusMark(c) ?? '');
    setNumber($('.cand-pct', li), c.percent, pct);
    setNumber($('.votes', li), c.votes, int);
    $('.bar span', li).style.width = `${Math.min(100, c.percent)}%`;
    return li;
  });
  if (!nodes.length) list.replaceChildren(h('li', { class: 'empty' }, 'Aguardando os primeiros votos.'));
  else reorder(list, nodes);

  const t = doc.totals;
  const row = (label, value, extra) => h('div', {}, h('dt', {}, label), h('dd', { class: 'num' }, int(value), extra ? h('small', {}, ` ${extra}`) : null));
  const share = (n) => (t.turnout ? pct1((100 * n) / t.turnout) : '');
  $('#mayor-totals').replaceChildren(
    row('Válidos', t.valid, share(t.valid)),
    row('Brancos', t.blank, share(t.blank)),
    row('Nulos', t.null, share(t.null)),
    row('Comparecimento', t.turnout, t.electorate ? pct1((100 * t.turnout) / t.electorate) : ''),
    row('Abstenções', t.abstentions, t.electorate ? pct1((100 * t.abstentions) / t.electorate) : ''),
  );
}

// --- councillors ---------------------------------------------------------------------------------------

const COUNCIL_TOP = 10;

function renderCouncil(doc) {
  state.council = doc;
  const body = $('#council-body');
  let table = $('table', body);
  if (!table) {
    table = h('table', { class: 'council' },
      h('thead', {}, h('tr', {}, h('th', { class: 'rank' }, '#'), h('th', {}, 'Candidato'), h('th', { class: 'r' }, 'Votos'), h('th', { class: 'r pc' }, '%'))),
      h('tbody'),
    );
    body.replaceChildren(table);
  }
  const shown = state.councilAll ? doc.candidates : doc.candidates.slice(0, COUNCIL_TOP);
  const tbody = $('tbody', table);
  const existing = new Map([...tbody.children].map((tr) => [tr.dataset.key, tr]));
  const rows = shown.map((c, i) => {
    const key = candKey(c);
    let tr = existing.get(key);
    if (!tr) {
      tr = h('tr', { 'data-key': key },
        h('td', { class: 'rank num' }),
        h('td', {}, h('span', { class: 'sw' }), h('span', { class: 'cname' }), ' ', h('span', { class: 'party' }), h('span', { class: 'cmark' })),
        h('td', { class: 'r num votes' }),
        h('td', { class: 'r num pc' }),
      );
    }
    tr.children[0].textContent = `${i + 1}º`;
    $('.sw', tr).style.background = partyColor(c.party, c.color);
    $('.cname', tr).textContent = displayName(c.name);
    $('.party', tr).textContent = c.number ? `${c.party} · ${c.number}` : c.party;
    $('.cmark', tr).replaceChildren(statusMark(c) ?? '');
    const votes = tr.children[2];
    if (votes._value !== undefined && votes._value !== c.votes) flash(votes);
    votes._value = c.votes;
    votes.textContent = int(c.votes);
    tr.children[3].textContent = pct(c.percent);
    return tr;
  });
  tbody.replaceChildren(...rows);
  const elected = doc.candidates.filter((c) => c.elected || c.status === 'elected').length;
  $('#council-meta').textContent =
    `${int(doc.candidates.length)} candidatos · ${counted(doc.progress.percent, doc.candidates.some((c) => c.votes > 0))} apurado` +
    (elected ? ` · ${elected} eleitos` : '');
  const more = $('#council-more');
  more.hidden = doc.candidates.length <= COUNCIL_TOP;
  more.textContent = state.councilAll ? 'ver menos' : `ver todos (${int(doc.candidates.length)})`;
}

// --- national view -------------------------------------------------------------------------------------

// A tile-grid cartogram: each state one square, roughly where it sits on the map.
const TILES = [
  ['RR', 0, 2], ['AP', 0, 3],
  ['AM', 1, 1], ['PA', 1, 2], ['MA', 1, 3], ['CE', 1, 4], ['RN', 1, 5],
  ['AC', 2, 0], ['RO', 2, 1], ['TO', 2, 2], ['PI', 2, 3], ['PE', 2, 4], ['PB', 2, 5],
  ['MT', 3, 1], ['GO', 3, 2], ['BA', 3, 3], ['AL', 3, 4], ['SE', 3, 5],
  ['MS', 4, 1], ['DF', 4, 2], ['MG', 4, 3], ['ES', 4, 4],
  ['PR', 5, 1], ['SP', 5, 2], ['RJ', 5, 3],
  ['SC', 6, 1],
  ['RS', 7, 1],
];

/** Light to deep blue as the count advances. */
function progressColor(p) {
  const k = Math.max(0, Math.min(1, p / 100));
  const mix = (a, b) => Math.round(a + (b - a) * k);
  return `rgb(${mix(226, 16)}, ${mix(234, 63)}, ${mix(244, 132)})`;
}

function renderBrazil(doc) {
  state.brazil = doc;
  renderSource(doc.source);
  const p = doc.progress;
  const votes = doc.capitals.some((c) => c.leader) || doc.parties.length > 0;
  setNumber($('#br-pct'), p.percent, (v) => counted(v, votes, 2));
  $('#br-bar').style.width = `${p.percent}%`;
  $('#br-cities').textContent = `${int(p.cities_final)} de ${int(p.cities_total)} municípios com apuração encerrada (${pct1(p.percent_cities_final)})`;
  $('#br-updated').dataset.published = doc.published_at;
  tick();

  const states = new Map(doc.states.map((s) => [s.uf, s]));
  const capitals = new Map(doc.capitals.map((c) => [c.uf, c]));
  const map = $('#br-map');
  if (!map.children.length) {
    for (const [uf, row, col] of TILES) {
      map.append(
        h('button', {
          class: 'tile', 'data-uf': uf, style: `grid-row:${row + 1};grid-column:${col + 1}`, type: 'button',
          onclick: () => {
            const cap = state.brazil?.capitals.find((c) => c.uf === uf);
            if (cap) location.hash = `#/${uf.toLowerCase()}/${cap.slug}`;
          },
        }, h('b', {}, uf), h('small', { class: 'num' })),
      );
    }
  }
  for (const tile of map.children) {
    const s = states.get(tile.dataset.uf);
    const value = s ? s.progress.percent : 0;
    tile.style.background = progressColor(value);
    tile.classList.toggle('dark', value > 45);
    tile.classList.toggle('nodata', !s);
    $('small', tile).textContent = s ? counted(value, s.progress.cities_total > 0 && value > 0) : '—';
    const cap = capitals.get(tile.dataset.uf);
    tile.title = s
      ? `${s.name}: ${counted(value)} das seções apuradas · ${int(s.progress.cities_final)} de ${int(s.progress.cities_total)} municípios encerrados` +
        (cap ? ` · ver ${cap.name}` : '')
      : `${tile.dataset.uf}: sem dados`;
  }

  const capList = $('#br-capitals');
  const existing = new Map([...capList.children].map((li) => [li.dataset.uf, li]));
  const caps = [...doc.capitals].sort((a, b) => a.name.localeCompare(b.name, 'pt-BR'));
  capList.replaceChildren(
    ...caps.map((c) => {
      let li = existing.get(c.uf);
      if (!li) {
        li = h('li', { 'data-uf': c.uf },
          h('a', { href: `#/${c.uf.toLowerCase()}/${c.slug}` },
            h('span', { class: 'cap-city' }, h('span', { class: 'cap-name' }), ' ', h('span', { class: 'uf' })),
            h('span', { class: 'cap-cands' }),
            h('span', { class: 'cap-foot' }, h('span', { class: 'minibar' }, h('span')), h('span', { class: 'cap-pct num' }), h('span', { class: 'cap-mark' })),
          ),
        );
      }
      const l = c.leader;
      const runoff = c.second_round ?? [];
      $('.cap-name', li).textContent = c.name;
      $('.uf', li).textContent = c.uf;
      // A city going to a second round shows both candidates; otherwise the leader (or winner).
      const shown = runoff.length ? runoff : l ? [l] : [];
      const cands = $('.cap-cands', li);
      const rows = [...cands.querySelectorAll('.cap-leader')];
      if (!shown.length) cands.replaceChildren(h('span', { class: 'cap-leader muted' }, 'aguardando votos'));
      else {
        if (rows.length !== shown.length || !rows[0].querySelector('.photo')) {
          cands.replaceChildren(
            ...shown.map(() =>
              h('span', { class: 'cap-leader' },
                h('img', { class: 'photo', width: 28, height: 28, decoding: 'async', alt: '' }),
                h('span', { class: 'who' }),
                h('span', { class: 'party' }),
                h('span', { class: 'num lp' })),
            ),
          );
        }
        [...cands.children].forEach((row, i) => {
          const x = shown[i];
          const color = partyColor(x.party, x.color);
          setPhoto($('.photo', row), x, color);
          $('.who', row).textContent = displayName(x.name);
          $('.who', row).title = displayName(x.name);
          $('.party', row).textContent = x.party;
          $('.party', row).style.color = color;
          $('.lp', row).textContent = pct1(x.percent);
        });
      }
      $('.minibar span', li).style.width = `${c.percent}%`;
      $('.cap-mark', li).replaceChildren(
        runoff.length ? h('span', { class: 'mark second' }, '2º turno') : l?.elected ? h('span', { class: 'mark elected' }, 'Eleito') : '',
      );
      setNumber($('.cap-pct', li), c.percent, (v) => `${counted(v, !!l)} apurado`);
      li.classList.toggle('final', !!c.final);
      li.classList.toggle('runoff', runoff.length > 0);
      return li;
    }),
  );

  const second = (x) => x.second_round ?? 0;
  const parties = doc.parties.filter((x) => x.elected + x.leading + second(x) > 0);
  const max = Math.max(1, ...parties.map((x) => x.elected + x.leading + second(x)));
  const shown = $('#br-parties').classList.contains('all') ? parties : parties.slice(0, 12);
  $('#br-parties-list').replaceChildren(
    ...shown.map((x) =>
      h('li', {
        style: `--c:${partyColor(x.party)}`,
        title: `${x.party}: ${int(x.elected)} eleitos, ${int(x.leading)} liderando, ${int(second(x))} no 2º turno`,
      },
        h('span', { class: 'pname' }, x.party),
        h('span', { class: 'pbar' },
          h('span', { class: 'won', style: `width:${(100 * x.elected) / max}%` }),
          h('span', { class: 'lead', style: `width:${(100 * x.leading) / max}%` }),
          h('span', { class: 'runoff', style: `width:${(100 * second(x)) / max}%` }),
        ),
        h('span', { class: 'pnum num' }, h('b', {}, int(x.elected)),
          x.leading ? h('span', {}, ` + ${int(x.leading)}`) : null,
          second(x) ? h('span', { class: 'p2' }, ` + ${int(second(x))} 2ºT`) : null),
      ),
    ),
  );
  $('#br-parties-more').hidden = parties.length <= 12;
}

// --- clock: "atualizado há 3 s" and the stale label -------------------------------------------------

function tick() {
  for (const el of document.querySelectorAll('[data-published]')) {
    el.textContent = `atualizado ${ago(Number(el.dataset.published))}`;
  }
  if (state.status.state === 'stale') renderStatus();
}

// --- start ----------------------------------------------------------------------------------------------

async function loadCities() {
  const res = await fetch(new URL('cities.json', client.baseUrl));
  if (!res.ok) throw new Error(`cities.json: HTTP ${res.status}`);
  const doc = await res.json();
  state.cities = doc.cities.map((c) => ({ ...c, folded: fold(c.name) }));
  state.byRoute = new Map(state.cities.map((c) => [`${c.uf.toLowerCase()}/${c.slug}`, c]));
  $('#search').placeholder = 'Digite o nome da cidade';
  $('#search-count').textContent = `${int(state.cities.length)} municípios`;
  $('#search').disabled = false;
}

function main() {
  setupSearch();
  renderStatus();
  $('#council-more').addEventListener('click', () => {
    state.councilAll = !state.councilAll;
    if (state.council) renderCouncil(state.council);
  });
  $('#br-parties-more').addEventListener('click', (e) => {
    const all = $('#br-parties').classList.toggle('all');
    e.target.textContent = all ? 'ver menos' : 'ver todos os partidos';
    if (state.brazil) renderBrazil(state.brazil);
  });
  client.subscribe('brazil', renderBrazil);
  setInterval(tick, 1000);
  window.addEventListener('hashchange', route);
  const load = (wait) =>
    loadCities()
      .then(route)
      .catch((e) => {
        // The gateway may be restarting: try again, less often each time.
        console.warn(e);
        $('#search').placeholder = 'Lista de municípios indisponível; tentando de novo…';
        setTimeout(() => load(Math.min(wait * 2, 10000)), wait);
      });
  load(2000);
  window.apura = { client, state }; // for the console and the browser test
}

main();
