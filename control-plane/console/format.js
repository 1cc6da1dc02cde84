// Times as people read them: relative ("3 minutes ago") with the exact time
// on hover, and the one rule for an expiration date picked in the browser.

import { h } from './dom.js';

const relative = new Intl.RelativeTimeFormat('en', { numeric: 'auto' });
const exact = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'long' });
const UNITS = [
  ['year', 365 * 24 * 3600], ['month', 30 * 24 * 3600], ['week', 7 * 24 * 3600],
  ['day', 24 * 3600], ['hour', 3600], ['minute', 60], ['second', 1],
];
export const SOON_DAYS = 7;

/** "3 minutes ago", "in 5 days". */
export function relativeTime(date, now = new Date()) {
  const seconds = Math.round((date.getTime() - now.getTime()) / 1000);
  if (Math.abs(seconds) < 45) return seconds <= 0 ? 'just now' : 'in a few seconds';
  for (const [unit, size] of UNITS) {
    if (Math.abs(seconds) >= size) return relative.format(Math.round(seconds / size), unit);
  }
  return relative.format(seconds, 'second');
}

export function exactTime(date) {
  return exact.format(date);
}

/** A <time> element: relative text, exact time as its tooltip; `never`
 *  when the value is empty. */
export function timeCell(iso, never = 'Never') {
  if (!iso) return h('span', { class: 'muted' }, never);
  const date = new Date(iso);
  return h('time', { datetime: iso, title: exactTime(date) }, relativeTime(date));
}

/** 'never' | 'expired' | 'soon' (within SOON_DAYS) | 'later'. */
export function expiryState(iso, now = new Date()) {
  if (!iso) return 'never';
  const left = new Date(iso).getTime() - now.getTime();
  if (left <= 0) return 'expired';
  if (left <= SOON_DAYS * 24 * 3600 * 1000) return 'soon';
  return 'later';
}

/** The browser's local date today, as YYYY-MM-DD (an <input type=date> value). */
export function todayValue(now = new Date()) {
  return dateValue(now);
}

function dateValue(d) {
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

/** The end of the day `value` (YYYY-MM-DD) in the browser's time zone, as
 *  RFC 3339 with its offset (e.g. 2027-01-31T23:59:59+01:00); null when
 *  `value` is not a date. */
export function endOfDay(value) {
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value || '');
  if (!match) return null;
  const [year, month, day] = [Number(match[1]), Number(match[2]), Number(match[3])];
  const date = new Date(year, month - 1, day, 23, 59, 59);
  if (date.getFullYear() !== year || date.getMonth() !== month - 1 || date.getDate() !== day) return null;
  const offset = -date.getTimezoneOffset();
  const sign = offset >= 0 ? '+' : '-';
  const pad = (n) => String(Math.floor(Math.abs(n))).padStart(2, '0');
  return `${value}T23:59:59${sign}${pad(offset / 60)}:${pad(offset % 60)}`;
}
