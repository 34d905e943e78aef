/* ranges.c - the "# ranges:" line of a step file; see ranges.h. */
#include "ranges.h"
#include "errbuf.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

/* One item "NAME=LO:HI[:n][@x]" of len bytes at p. */
static int parse_item(const char *p, size_t len, range_spec *it, char *err, size_t err_size) {
  char buf[256];
  if (len >= sizeof buf)
    return errbuf_fail(err, err_size, "ranges item '%.40s...' is too long", p);
  memcpy(buf, p, len);
  buf[len] = 0;
  memset(it, 0, sizeof *it);
  const char *eq = strchr(buf, '=');
  size_t nl = eq ? (size_t)(eq - buf) : 0;
  bool ident = nl > 0 && nl < RANGES_NAME_MAX && !isdigit((unsigned char)buf[0]);
  for (size_t i = 0; ident && i < nl; i++)
    ident = isalnum((unsigned char)buf[i]) || buf[i] == '_';
  if (!ident)
    return errbuf_fail(err, err_size,
                       "ranges item '%s': expected NAME=LO:HI[:n][@h|@g|@t] with NAME a port name",
                       buf);
  memcpy(it->name, buf, nl);
  it->name[nl] = 0;
  const char *q = eq + 1;
  char *end;
  errno = 0;
  it->lo = strtod(q, &end);
  bool ok = end != q && *end == ':' && !errno;
  if (ok) {
    q = end + 1;
    it->hi = strtod(q, &end);
    ok = end != q && !errno;
  }
  if (ok && end[0] == ':' && end[1] == 'n')
    it->scale_n = true, end += 2;
  if (ok && end[0] == '@') {
    it->bcast = end[1];
    ok = (end[1] == 'h' || end[1] == 'g' || end[1] == 't');
    end += ok ? 2 : 1;
  }
  if (!ok || *end)
    return errbuf_fail(err, err_size, "ranges item '%s': expected %s=LO:HI[:n][@h|@g|@t]", buf,
                       it->name);
  if (!isfinite(it->lo) || !isfinite(it->hi) || !(it->lo < it->hi))
    return errbuf_fail(err, err_size, "ranges item '%s': needs finite LO < HI", buf);
  return 0;
}

int ranges_parse(const char *spec, ranges *out, char *err, size_t err_size) {
  out->n = 0;
  const char *p = spec;
  for (;;) {
    while (is_blank(*p))
      p++;
    const char *e = strchr(p, ',');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    while (len && is_blank(p[len - 1]))
      len--;
    if (len == 0) {
      if (!e && out->n == 0)
        break; /* an empty spec */
      return errbuf_fail(err, err_size, "ranges '%s': empty item", spec);
    }
    if (out->n == RANGES_MAX_ITEMS)
      return errbuf_fail(err, err_size, "ranges '%s': more than %d items", spec, RANGES_MAX_ITEMS);
    range_spec *it = &out->item[out->n];
    if (parse_item(p, len, it, err, err_size))
      return -1;
    for (int k = 0; k < out->n; k++)
      if (!strcmp(out->item[k].name, it->name))
        return errbuf_fail(err, err_size, "ranges '%s': '%s' given twice", spec, it->name);
    out->n++;
    if (!e)
      break;
    p = e + 1;
  }
  return 0;
}

int ranges_from_text(const char *text, ranges *out, bool *found, char *err, size_t err_size) {
  out->n = 0;
  *found = false;
  int line = 1;
  for (const char *p = text; *p; line++) {
    const char *nl = strchr(p, '\n');
    size_t len = nl ? (size_t)(nl - p) : strlen(p);
    const char *q = p, *end = p + len;
    while (q < end && is_blank(*q))
      q++;
    if (q < end && *q == '#') {
      q++;
      while (q < end && is_blank(*q))
        q++;
      if ((size_t)(end - q) >= 7 && !memcmp(q, "ranges:", 7)) {
        if (*found)
          return errbuf_fail(err, err_size, "line %d: a second '# ranges:' line", line);
        q += 7;
        char spec[4096];
        size_t sl = (size_t)(end - q);
        if (sl >= sizeof spec)
          return errbuf_fail(err, err_size, "line %d: '# ranges:' line too long", line);
        memcpy(spec, q, sl);
        spec[sl] = 0;
        char msg[512];
        if (ranges_parse(spec, out, msg, sizeof msg))
          return errbuf_fail(err, err_size, "line %d: %s", line, msg);
        *found = true;
      }
    }
    if (!nl)
      break;
    p = nl + 1;
  }
  return 0;
}

int ranges_from_file(const char *path, ranges *out, bool *found, char *err, size_t err_size) {
  out->n = 0;
  *found = false;
  FILE *f = fopen(path, "rb");
  if (!f)
    return errbuf_fail(err, err_size, "%s: %s", path, strerror(errno));
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  for (;;) {
    if (!buf) {
      fclose(f);
      return errbuf_fail(err, err_size, "%s: out of memory", path);
    }
    n += fread(buf + n, 1, cap - 1 - n, f);
    if (n < cap - 1 || feof(f))
      break;
    char *nb = realloc(buf, cap * 2);
    if (!nb)
      free(buf);
    buf = nb, cap *= 2;
  }
  bool bad = ferror(f);
  fclose(f);
  if (bad) {
    free(buf);
    return errbuf_fail(err, err_size, "%s: read error", path);
  }
  buf[n] = 0;
  char msg[768];
  int rc = ranges_from_text(buf, out, found, msg, sizeof msg);
  free(buf);
  if (rc) /* "line N: ..." -> "path:N: ..." */
    return !strncmp(msg, "line ", 5) ? errbuf_fail(err, err_size, "%s:%s", path, msg + 5)
                                     : errbuf_fail(err, err_size, "%s: %s", path, msg);
  return 0;
}

range_spec ranges_get(const ranges *r, const char *name, bool is_state, int64_t N) {
  range_spec s;
  memset(&s, 0, sizeof s);
  snprintf(s.name, sizeof s.name, "%s", name);
  s.lo = is_state ? -0.1 : -1;
  s.hi = is_state ? 0.1 : 1;
  for (int k = 0; r && k < r->n; k++)
    if (!strcmp(r->item[k].name, name)) {
      s = r->item[k];
      break;
    }
  if (s.scale_n) {
    double f = sqrt(3.0 / (double)N);
    s.lo *= f, s.hi *= f;
  }
  return s;
}

void ranges_input_shape(char bcast, int64_t B, int64_t T, int64_t H, int64_t m, int64_t n,
                        int64_t shape[5]) {
  shape[0] = bcast == 'h' ? 1 : B;
  shape[1] = bcast == 'h' || bcast == 't' ? 1 : T;
  shape[2] = bcast == 'g' ? 1 : H;
  shape[3] = m;
  shape[4] = n;
}
