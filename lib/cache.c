/* cache.c - the compilation cache: a bounded in-process map in front of a
 * directory of one file per key.
 *
 * Entry file, native byte order (the cache is local to one machine):
 *   offset 0   8 bytes  magic "FRNNCCH\n"
 *          8   u32      FRNN_CACHE_FORMAT
 *         12   u32      key text length K
 *         16   u64      payload length P
 *         24   u64      payload checksum
 *         32   K bytes  key text (compared on read: a hash collision reads as corrupt)
 *       32+K   P bytes  payload
 * The file size must be exactly 32 + K + P.  Files are written to a unique
 * temporary name in the same directory, fsync'ed and renamed over the entry,
 * so a reader sees an old entry or a new one, never a torn one. */
#include "frnn_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef FRNN_LLVM_VERSION
#define FRNN_LLVM_VERSION "unknown"
#endif

#define CACHE_MAGIC "FRNNCCH\n"
#define HEADER_SIZE 32
#define MEM_MAX_ENTRIES 256
#define MEM_MAX_BYTES ((size_t)256 << 20)
#define PATH_SIZE 4096

/* ------------------------------------------------------------- hashing */
static uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* 64-bit hash of bytes, a word at a time; different seeds give independent
 * hashes.  Not cryptographic: it names files and catches damage. */
static uint64_t hash64(const void *data, size_t n, uint64_t seed) {
  const unsigned char *p = data;
  uint64_t h = mix64(seed ^ (n * 0x9e3779b97f4a7c15ull));
  while (n >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    h = (h ^ mix64(w ^ seed)) * 0x9e3779b97f4a7c15ull;
    h = (h << 29) | (h >> 35);
    p += 8;
    n -= 8;
  }
  uint64_t w = 0;
  memcpy(&w, p, n);
  return mix64(h ^ mix64(w ^ seed ^ 0x632be59bd9b4e019ull));
}

#define SEED_NAME_A 0x46524e4e2d6b6579ull /* "FRNN-key" */
#define SEED_NAME_B 0x2d7e3c5a91f0b8d1ull
#define SEED_PAYLOAD 0x7061796c6f616421ull

/* --------------------------------------------------------------- keys */
/* The full key text; every field is length-prefixed so that no choice of
 * field contents can make two different keys print the same.  malloc'ed. */
#define KEY_FORMAT \
  "frnn-cache %d\nllvm %zu:%s\ngraph %016llx\nspec %zu:%s\narch %zu:%s\nkind %zu:%s\n"
static char *key_text(const cache_key *k, size_t *len) {
  const char *spec = k->spec ? k->spec : "", *arch = k->arch ? k->arch : "",
             *kind = k->kind ? k->kind : "";
  int n = snprintf(NULL, 0, KEY_FORMAT, FRNN_CACHE_FORMAT, strlen(FRNN_LLVM_VERSION),
                   FRNN_LLVM_VERSION, (unsigned long long)k->graph_hash, strlen(spec), spec,
                   strlen(arch), arch, strlen(kind), kind);
  if (n < 0) return NULL;
  char *s = malloc((size_t)n + 1);
  if (!s) return NULL;
  snprintf(s, (size_t)n + 1, KEY_FORMAT, FRNN_CACHE_FORMAT, strlen(FRNN_LLVM_VERSION),
           FRNN_LLVM_VERSION, (unsigned long long)k->graph_hash, strlen(spec), spec,
           strlen(arch), arch, strlen(kind), kind);
  *len = (size_t)n;
  return s;
}

frnn_status cache_dir(char *buf, size_t size) {
  const char *env = getenv("FRNN_CACHE_DIR");
  int n;
  if (env && *env)
    n = snprintf(buf, size, "%s", env);
  else if ((env = getenv("XDG_CACHE_HOME")) && env[0] == '/') /* XDG: absolute only */
    n = snprintf(buf, size, "%s/frnn", env);
  else if ((env = getenv("HOME")) && *env)
    n = snprintf(buf, size, "%s/.cache/frnn", env);
  else
    return FRNN_E_IO;
  if (n < 0 || (size_t)n >= size) return FRNN_E_IO;
  /* Trailing slashes would double up in entry paths. */
  while (n > 1 && buf[n - 1] == '/') buf[--n] = 0;
  return FRNN_OK;
}

/* Entry path from the directory and the key text's two hashes. */
static frnn_status entry_path(const char *keytext, size_t keylen, char *buf, size_t size) {
  char dir[PATH_SIZE];
  if (cache_dir(dir, sizeof dir)) return FRNN_E_IO;
  int n = snprintf(buf, size, "%s/%016llx%016llx.frnn-cache", dir,
                   (unsigned long long)hash64(keytext, keylen, SEED_NAME_A),
                   (unsigned long long)hash64(keytext, keylen, SEED_NAME_B));
  return n < 0 || (size_t)n >= size ? FRNN_E_IO : FRNN_OK;
}

frnn_status cache_entry_path(const cache_key *key, char *buf, size_t size) {
  if (!key || !buf) return FRNN_E_ARG;
  size_t kl;
  char *kt = key_text(key, &kl);
  if (!kt) return FRNN_E_NOMEM;
  frnn_status st = entry_path(kt, kl, buf, size);
  free(kt);
  return st;
}

/* ----------------------------------------------------- in-process cache */
typedef struct mem_entry {
  char *key;     /* key text (NULL: free slot) */
  size_t keylen;
  char *payload; /* NUL-terminated after len bytes */
  size_t len;
  uint64_t hash; /* of the key text */
  uint64_t used; /* tick of the last use, for LRU eviction */
} mem_entry;

static pthread_mutex_t mem_lock = PTHREAD_MUTEX_INITIALIZER;
static mem_entry mem[MEM_MAX_ENTRIES];
static size_t mem_bytes;
static uint64_t mem_tick;

static void mem_drop(mem_entry *e) {
  mem_bytes -= e->len;
  free(e->key);
  free(e->payload);
  memset(e, 0, sizeof *e);
}

void cache_clear_memory(void) {
  pthread_mutex_lock(&mem_lock);
  for (int i = 0; i < MEM_MAX_ENTRIES; i++)
    if (mem[i].key) mem_drop(&mem[i]);
  mem_bytes = 0;
  pthread_mutex_unlock(&mem_lock);
}

static mem_entry *mem_find(const char *key, size_t keylen, uint64_t h) {
  for (int i = 0; i < MEM_MAX_ENTRIES; i++)
    if (mem[i].key && mem[i].hash == h && mem[i].keylen == keylen &&
        memcmp(mem[i].key, key, keylen) == 0)
      return &mem[i];
  return NULL;
}

/* A malloc'ed copy of n bytes with a NUL after them. */
static char *copy_payload(const char *p, size_t n) {
  char *c = malloc(n + 1);
  if (!c) return NULL;
  if (n) memcpy(c, p, n);
  c[n] = 0;
  return c;
}

/* Copy of the payload cached for key, or NULL (not there, or no memory). */
static char *mem_get(const char *key, size_t keylen, uint64_t h, size_t *len) {
  char *out = NULL;
  pthread_mutex_lock(&mem_lock);
  mem_entry *e = mem_find(key, keylen, h);
  if (e) {
    e->used = ++mem_tick;
    if ((out = copy_payload(e->payload, e->len))) *len = e->len;
  }
  pthread_mutex_unlock(&mem_lock);
  return out;
}

/* Remember a copy (best effort: skipped when too large or out of memory). */
static void mem_put(const char *key, size_t keylen, uint64_t h, const char *payload, size_t len) {
  char *kc = NULL, *pc = NULL;
  bool keep = len <= MEM_MAX_BYTES / 4 && (kc = copy_payload(key, keylen)) &&
              (pc = copy_payload(payload, len));
  pthread_mutex_lock(&mem_lock);
  mem_entry *e = mem_find(key, keylen, h);
  if (e) mem_drop(e); /* never leave an older payload behind */
  if (!keep) {
    pthread_mutex_unlock(&mem_lock);
    free(kc);
    free(pc);
    return;
  }
  for (;;) {
    mem_entry *free_slot = NULL, *oldest = NULL;
    for (int i = 0; i < MEM_MAX_ENTRIES; i++) {
      if (!mem[i].key) {
        if (!free_slot) free_slot = &mem[i];
      } else if (!oldest || mem[i].used < oldest->used) {
        oldest = &mem[i];
      }
    }
    if (free_slot && mem_bytes + len <= MEM_MAX_BYTES) {
      e = free_slot;
      break;
    }
    mem_drop(oldest); /* full, by count or bytes: oldest exists */
  }
  *e = (mem_entry){kc, keylen, pc, len, h, ++mem_tick};
  mem_bytes += len;
  pthread_mutex_unlock(&mem_lock);
}

/* ------------------------------------------------------------- on disk */
static void put_u32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); }
static void put_u64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get_u32(const unsigned char *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}
static uint64_t get_u64(const unsigned char *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

/* Read exactly n bytes; false on error or end of file. */
static bool read_all(int fd, void *buf, size_t n) {
  char *p = buf;
  while (n) {
    ssize_t r = read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= (size_t)r;
  }
  return true;
}

static bool write_all(int fd, const void *buf, size_t n) {
  const char *p = buf;
  while (n) {
    ssize_t r = write(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= (size_t)r;
  }
  return true;
}

/* Delete a damaged entry, unless another process has meanwhile renamed a
 * new file over it (then that one stays). */
static void remove_corrupt(const char *path, int fd) {
  struct stat a, b;
  if (fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
    unlink(path);
}

enum disk_result { DISK_MISS, DISK_HIT, DISK_CORRUPT, DISK_NOMEM };

static enum disk_result disk_get(const char *path, const char *key, size_t keylen, char **payload,
                                 size_t *len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return DISK_MISS;
  enum disk_result res = DISK_CORRUPT;
  char *kbuf = NULL, *pbuf = NULL;
  unsigned char h[HEADER_SIZE];
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    res = DISK_MISS;
    goto done;
  }
  if ((uint64_t)st.st_size < HEADER_SIZE || !read_all(fd, h, HEADER_SIZE)) goto done;
  if (memcmp(h, CACHE_MAGIC, 8) != 0 || get_u32(h + 8) != FRNN_CACHE_FORMAT) goto done;
  uint64_t kl = get_u32(h + 12), pl = get_u64(h + 16), sum = get_u64(h + 24);
  if (kl != keylen || pl > (uint64_t)st.st_size || (uint64_t)st.st_size != HEADER_SIZE + kl + pl)
    goto done;
  if (!(kbuf = malloc(keylen ? keylen : 1)) || !(pbuf = malloc((size_t)pl + 1))) {
    res = DISK_NOMEM;
    goto done;
  }
  if (!read_all(fd, kbuf, keylen) || memcmp(kbuf, key, keylen) != 0) goto done;
  if (!read_all(fd, pbuf, (size_t)pl) || hash64(pbuf, (size_t)pl, SEED_PAYLOAD) != sum) goto done;
  pbuf[pl] = 0;
  *payload = pbuf;
  *len = (size_t)pl;
  pbuf = NULL;
  res = DISK_HIT;
done:
  if (res == DISK_CORRUPT) remove_corrupt(path, fd);
  close(fd);
  free(kbuf);
  free(pbuf);
  return res;
}

/* mkdir -p; 0 on success, else an errno. */
static int make_dirs(const char *dir) {
  char p[PATH_SIZE];
  size_t n = strlen(dir);
  if (n == 0 || n >= sizeof p) return ENAMETOOLONG;
  memcpy(p, dir, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (p[i] != '/' && p[i] != 0) continue;
    char c = p[i];
    p[i] = 0;
    if (mkdir(p, 0777) != 0 && errno != EEXIST) return errno;
    p[i] = c;
  }
  struct stat st;
  if (stat(dir, &st) != 0) return errno;
  return S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
}

static frnn_status disk_put(frnn_ctx *ctx, const char *path, const char *key, size_t keylen,
                            const char *payload, size_t len) {
  char dir[PATH_SIZE], tmp[PATH_SIZE];
  if (cache_dir(dir, sizeof dir))
    return diag_fail(ctx, FRNN_E_IO, "compilation cache disabled: no directory "
                                     "(set FRNN_CACHE_DIR, XDG_CACHE_HOME or HOME)");
  int err = make_dirs(dir);
  if (err)
    return diag_fail(ctx, FRNN_E_IO, "compilation cache disabled: cannot create %s: %s", dir,
                     strerror(err));
  const char *base = strrchr(path, '/');
  int n = snprintf(tmp, sizeof tmp, "%s/.tmp-%.16s-XXXXXX", dir, base ? base + 1 : path);
  if (n < 0 || (size_t)n >= sizeof tmp)
    return diag_fail(ctx, FRNN_E_IO, "compilation cache: path too long in %s", dir);
  int fd = mkostemp(tmp, O_CLOEXEC);
  if (fd < 0)
    return diag_fail(ctx, FRNN_E_IO, "compilation cache: cannot write in %s: %s", dir,
                     strerror(errno));
  unsigned char h[HEADER_SIZE];
  memcpy(h, CACHE_MAGIC, 8);
  put_u32(h + 8, FRNN_CACHE_FORMAT);
  put_u32(h + 12, (uint32_t)keylen);
  put_u64(h + 16, len);
  put_u64(h + 24, hash64(payload, len, SEED_PAYLOAD));
  const char *what = "write";
  errno = 0;
  bool ok = write_all(fd, h, sizeof h) && write_all(fd, key, keylen) &&
            write_all(fd, payload, len);
  if (ok && !(ok = fsync(fd) == 0)) what = "fsync";
  err = errno;
  if (close(fd) != 0 && ok) {
    ok = false;
    what = "close";
    err = errno;
  }
  if (ok && !(ok = rename(tmp, path) == 0)) {
    what = "rename";
    err = errno;
  }
  if (!ok) {
    unlink(tmp);
    return diag_fail(ctx, FRNN_E_IO, "compilation cache: %s of %s failed: %s", what, tmp,
                     strerror(err ? err : EIO));
  }
  return FRNN_OK;
}

/* ------------------------------------------------------------------ API */
frnn_status cache_get(frnn_ctx *ctx, const cache_key *key, char **payload, size_t *len,
                      cache_result *how) {
  if (!key || !payload || !len || !how)
    return diag_fail(ctx, FRNN_E_ARG, "cache_get: null argument");
  *payload = NULL;
  *len = 0;
  *how = CACHE_MISS;
  if (!key->kind || !key->kind[0])
    return diag_fail(ctx, FRNN_E_ARG, "cache_get: key without a payload kind");
  size_t kl;
  char *kt = key_text(key, &kl);
  if (!kt) return diag_fail(ctx, FRNN_E_NOMEM, "out of memory");
  uint64_t h = hash64(kt, kl, SEED_NAME_A);
  frnn_status st = FRNN_OK;
  if ((*payload = mem_get(kt, kl, h, len))) {
    *how = CACHE_MEMORY;
  } else {
    char path[PATH_SIZE];
    if (entry_path(kt, kl, path, sizeof path) == FRNN_OK) {
      switch (disk_get(path, kt, kl, payload, len)) {
      case DISK_HIT:
        *how = CACHE_DISK;
        mem_put(kt, kl, h, *payload, *len);
        break;
      case DISK_CORRUPT: *how = CACHE_CORRUPT; break;
      case DISK_NOMEM: st = diag_fail(ctx, FRNN_E_NOMEM, "out of memory reading %s", path); break;
      case DISK_MISS: break;
      }
    }
  }
  free(kt);
  return st;
}

frnn_status cache_put(frnn_ctx *ctx, const cache_key *key, const char *payload, size_t len) {
  if (!key || (!payload && len))
    return diag_fail(ctx, FRNN_E_ARG, "cache_put: null argument");
  if (!key->kind || !key->kind[0])
    return diag_fail(ctx, FRNN_E_ARG, "cache_put: key without a payload kind");
  if (!payload) payload = "";
  size_t kl;
  char *kt = key_text(key, &kl);
  if (!kt) return diag_fail(ctx, FRNN_E_NOMEM, "out of memory");
  mem_put(kt, kl, hash64(kt, kl, SEED_NAME_A), payload, len);
  char path[PATH_SIZE];
  frnn_status st;
  if (entry_path(kt, kl, path, sizeof path) != FRNN_OK)
    st = diag_fail(ctx, FRNN_E_IO, "compilation cache disabled: no usable directory "
                                   "(set FRNN_CACHE_DIR, XDG_CACHE_HOME or HOME)");
  else
    st = disk_put(ctx, path, kt, kl, payload, len);
  free(kt);
  return st;
}
