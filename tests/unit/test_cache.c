/* test_cache.c - the compilation cache (cache.c), without a GPU: misses,
 * hits from memory and from disk, damaged entries detected, deleted and
 * rebuilt, unwritable directories that never fail a caller, concurrent
 * writers that never show a reader a torn entry, the directory fallbacks.
 * Each test gets a fresh directory from mkdtemp in $FRNN_CACHE_DIR. */
#include "frnn_internal.h"
#include "testutil.h" /* rm_rf */

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------- helpers */
static char dir[4096];

/* A fresh empty cache directory in FRNN_CACHE_DIR, and an empty memory cache. */
static void setup(void) {
  const char *tmp = getenv("TMPDIR");
  snprintf(dir, sizeof dir, "%s/frnn-cache-test-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  ck_assert_ptr_nonnull(mkdtemp(dir));
  setenv("FRNN_CACHE_DIR", dir, 1);
  cache_clear_memory();
}

static void teardown(void) {
  cache_clear_memory();
  if (dir[0]) rm_rf(dir);
  dir[0] = 0;
}

static cache_key key_of(uint64_t hash, const char *spec) {
  return (cache_key){hash, spec, "sm_90", "ptx"};
}

static const char *entry_of(const cache_key *k) {
  static char path[4096];
  ck_assert_int_eq(cache_entry_path(k, path, sizeof path), FRNN_OK);
  return path;
}

static bool exists(const char *path) { return access(path, F_OK) == 0; }

static long file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* Files in `d` whose name starts with `prefix`. */
static int count_files(const char *d, const char *prefix) {
  char cmd[4200];
  snprintf(cmd, sizeof cmd, "ls -A '%s' 2>/dev/null | grep -c '^%s'", d, prefix);
  FILE *p = popen(cmd, "r");
  int n = 0;
  if (p) {
    if (fscanf(p, "%d", &n) != 1) n = 0;
    pclose(p);
  }
  return n;
}

/* Look up k and return how it was found; checks the payload on a hit. */
static cache_result lookup(const cache_key *k, const char *want, size_t want_len) {
  char *p = (char *)1;
  size_t n = 99;
  cache_result how = (cache_result)-1;
  ck_assert_int_eq(cache_get(NULL, k, &p, &n, &how), FRNN_OK);
  if (how == CACHE_MEMORY || how == CACHE_DISK) {
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(n, want_len);
    ck_assert(memcmp(p, want, n) == 0);
    ck_assert_int_eq(p[n], 0); /* NUL-terminated after the payload */
  } else {
    ck_assert_ptr_null(p);
    ck_assert_uint_eq(n, 0);
  }
  free(p);
  return how;
}

static void patch_file(const char *path, long offset, const void *bytes, size_t n) {
  int fd = open(path, O_WRONLY);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(pwrite(fd, bytes, n, offset), (ssize_t)n);
  close(fd);
}

static const char PTX[] = ".version 8.0\n.target sm_90\n.address_size 64\n// a kernel\n";

/* -------------------------------------------------------------- basics */
START_TEST(miss_put_memory_disk) {
  cache_key k = key_of(0x1234, "M=64 N=64 dtype=bf16 bcast=----- grads=all");
  ck_assert_int_eq(lookup(&k, NULL, 0), CACHE_MISS);
  ck_assert(!exists(entry_of(&k)));
  ck_assert_int_eq(cache_put(NULL, &k, PTX, strlen(PTX)), FRNN_OK);
  ck_assert(exists(entry_of(&k)));
  ck_assert_int_eq(lookup(&k, PTX, strlen(PTX)), CACHE_MEMORY);
  ck_assert_int_eq(lookup(&k, PTX, strlen(PTX)), CACHE_MEMORY);
  cache_clear_memory(); /* as a fresh process */
  ck_assert_int_eq(lookup(&k, PTX, strlen(PTX)), CACHE_DISK);
  ck_assert_int_eq(lookup(&k, PTX, strlen(PTX)), CACHE_MEMORY); /* disk hits fill memory */
  /* The file name is 32 hex digits under the directory. */
  const char *path = entry_of(&k);
  ck_assert(strncmp(path, dir, strlen(dir)) == 0);
  const char *name = strrchr(path, '/') + 1;
  ck_assert_uint_eq(strspn(name, "0123456789abcdef"), 32);
  ck_assert_int_eq(count_files(dir, ".tmp"), 0);
}
END_TEST

START_TEST(every_key_field_matters) {
  cache_key base = key_of(42, "M=64 N=64");
  cache_key other[] = {
      key_of(43, "M=64 N=64"),
      key_of(42, "M=64 N=65"),
      {42, "M=64 N=64", "sm_80", "ptx"},
      {42, "M=64 N=64", "sm_90", "cubin-sm_90-driver13000"},
      /* length prefixes: moving text between fields is another key */
      {42, "M=64 N=64\narch 5:sm_90", "", "ptx"},
  };
  ck_assert_int_eq(cache_put(NULL, &base, "base", 4), FRNN_OK);
  char p0[4096];
  snprintf(p0, sizeof p0, "%s", entry_of(&base));
  for (size_t i = 0; i < sizeof other / sizeof *other; i++) {
    ck_assert_str_ne(entry_of(&other[i]), p0);
    ck_assert_int_eq(lookup(&other[i], NULL, 0), CACHE_MISS);
  }
  cache_clear_memory();
  for (size_t i = 0; i < sizeof other / sizeof *other; i++)
    ck_assert_int_eq(lookup(&other[i], NULL, 0), CACHE_MISS);
  ck_assert_int_eq(lookup(&base, "base", 4), CACHE_DISK);
}
END_TEST

START_TEST(binary_empty_and_large_payloads) {
  cache_key kb = {7, "bin", "sm_90", "cubin-sm_90-driver13000"}, ke = key_of(8, "empty"),
            kl = key_of(9, "large");
  char bin[1000];
  for (size_t i = 0; i < sizeof bin; i++) bin[i] = (char)(i * 37 % 256); /* NULs inside */
  size_t big = (size_t)5 << 20;
  char *large = malloc(big);
  ck_assert_ptr_nonnull(large);
  for (size_t i = 0; i < big; i++) large[i] = (char)('a' + i % 23);
  ck_assert_int_eq(cache_put(NULL, &kb, bin, sizeof bin), FRNN_OK);
  ck_assert_int_eq(cache_put(NULL, &ke, NULL, 0), FRNN_OK);
  ck_assert_int_eq(cache_put(NULL, &kl, large, big), FRNN_OK);
  ck_assert_int_eq(lookup(&kb, bin, sizeof bin), CACHE_MEMORY);
  ck_assert_int_eq(lookup(&ke, "", 0), CACHE_MEMORY);
  ck_assert_int_eq(lookup(&kl, large, big), CACHE_MEMORY);
  cache_clear_memory();
  ck_assert_int_eq(lookup(&kb, bin, sizeof bin), CACHE_DISK);
  ck_assert_int_eq(lookup(&ke, "", 0), CACHE_DISK);
  ck_assert_int_eq(lookup(&kl, large, big), CACHE_DISK);
  free(large);
}
END_TEST

START_TEST(overwrite_replaces) {
  cache_key k = key_of(5, "s");
  ck_assert_int_eq(cache_put(NULL, &k, "first", 5), FRNN_OK);
  ck_assert_int_eq(cache_put(NULL, &k, "second!", 7), FRNN_OK);
  ck_assert_int_eq(lookup(&k, "second!", 7), CACHE_MEMORY);
  cache_clear_memory();
  ck_assert_int_eq(lookup(&k, "second!", 7), CACHE_DISK);
  ck_assert_int_eq(count_files(dir, ".tmp"), 0);
}
END_TEST

/* The memory cache is bounded: after 300 keys the first ones come from disk. */
START_TEST(memory_is_bounded) {
  char spec[64], payload[64];
  for (int i = 0; i < 300; i++) {
    snprintf(spec, sizeof spec, "key %d", i);
    snprintf(payload, sizeof payload, "payload %d", i);
    cache_key k = key_of(1, spec);
    ck_assert_int_eq(cache_put(NULL, &k, payload, strlen(payload)), FRNN_OK);
  }
  int memory = 0, disk = 0;
  for (int i = 299; i >= 0; i--) { /* newest first, so hits do not evict what is next */
    snprintf(spec, sizeof spec, "key %d", i);
    snprintf(payload, sizeof payload, "payload %d", i);
    cache_key k = key_of(1, spec);
    cache_result how = lookup(&k, payload, strlen(payload));
    ck_assert(how == CACHE_MEMORY || how == CACHE_DISK);
    if (how == CACHE_MEMORY) memory++;
    else disk++;
  }
  ck_assert_int_le(memory, 256);
  ck_assert_int_ge(disk, 44);
  ck_assert_int_ge(memory, 200);
}
END_TEST

START_TEST(bad_arguments) {
  frnn_ctx *ctx;
  ck_assert_int_eq(frnn_ctx_create(&ctx), FRNN_OK);
  cache_key k = key_of(1, "x"), nokind = {1, "x", "sm_90", NULL};
  char *p;
  size_t n;
  cache_result how;
  ck_assert_int_eq(cache_get(ctx, NULL, &p, &n, &how), FRNN_E_ARG);
  ck_assert_int_eq(cache_get(ctx, &k, NULL, &n, &how), FRNN_E_ARG);
  ck_assert_int_eq(cache_get(ctx, &nokind, &p, &n, &how), FRNN_E_ARG);
  ck_assert_int_eq(cache_put(ctx, NULL, "a", 1), FRNN_E_ARG);
  ck_assert_int_eq(cache_put(ctx, &k, NULL, 3), FRNN_E_ARG);
  ck_assert_int_eq(cache_put(ctx, &nokind, "a", 1), FRNN_E_ARG);
  ck_assert(strstr(frnn_ctx_error(ctx), "kind") != NULL);
  frnn_ctx_destroy(ctx);
}
END_TEST

/* ---------------------------------------------------- damaged entries */
/* Put k, clear memory, damage its file with `damage`, expect CORRUPT and
 * the file gone, then a rebuild that reads back from disk. */
static void check_damage(void (*damage)(const char *path), const cache_key *k) {
  static char payload[3000];
  for (size_t i = 0; i < sizeof payload; i++) payload[i] = (char)('A' + i % 26);
  ck_assert_int_eq(cache_put(NULL, k, payload, sizeof payload), FRNN_OK);
  cache_clear_memory();
  char path[4096];
  snprintf(path, sizeof path, "%s", entry_of(k));
  damage(path);
  ck_assert_int_eq(lookup(k, NULL, 0), CACHE_CORRUPT);
  ck_assert(!exists(path));
  ck_assert_int_eq(lookup(k, NULL, 0), CACHE_MISS);
  ck_assert_int_eq(cache_put(NULL, k, payload, sizeof payload), FRNN_OK); /* rebuilt */
  cache_clear_memory();
  ck_assert_int_eq(lookup(k, payload, sizeof payload), CACHE_DISK);
}

static void flip_payload_byte(const char *path) {
  long last = file_size(path) - 1;
  unsigned char c;
  int fd = open(path, O_RDWR);
  ck_assert_int_eq(pread(fd, &c, 1, last), 1);
  c ^= 0x20;
  ck_assert_int_eq(pwrite(fd, &c, 1, last), 1);
  close(fd);
}
static void truncate_tail(const char *path) {
  ck_assert_int_eq(truncate(path, file_size(path) - 10), 0);
}
static void truncate_header(const char *path) { ck_assert_int_eq(truncate(path, 20), 0); }
static void truncate_empty(const char *path) { ck_assert_int_eq(truncate(path, 0), 0); }
static void wrong_magic(const char *path) { patch_file(path, 0, "XRNN", 4); }
static void wrong_version(const char *path) {
  uint32_t v = FRNN_CACHE_FORMAT + 1;
  patch_file(path, 8, &v, 4);
}
static void wrong_length(const char *path) {
  uint64_t v = 2999; /* payload length field, one short */
  patch_file(path, 16, &v, 8);
}
static void trailing_garbage(const char *path) {
  int fd = open(path, O_WRONLY | O_APPEND);
  ck_assert_int_eq(write(fd, "xyz", 3), 3);
  close(fd);
}
static void key_byte(const char *path) { patch_file(path, 40, "#", 1); }

START_TEST(corrupt_payload_byte) {
  cache_key k = key_of(100, "flip");
  check_damage(flip_payload_byte, &k);
}
END_TEST
START_TEST(corrupt_truncated) {
  cache_key k = key_of(101, "truncate");
  check_damage(truncate_tail, &k);
  check_damage(truncate_header, &k);
  check_damage(truncate_empty, &k);
}
END_TEST
START_TEST(corrupt_magic_version_length) {
  cache_key k = key_of(102, "magic");
  check_damage(wrong_magic, &k);
  check_damage(wrong_version, &k);
  check_damage(wrong_length, &k);
  check_damage(trailing_garbage, &k);
  check_damage(key_byte, &k);
}
END_TEST

/* A file holding another key under this key's name (what a collision of
 * both 64-bit hashes would look like) is not taken for it. */
START_TEST(corrupt_key_mismatch) {
  cache_key a = key_of(200, "A"), b = key_of(200, "B");
  ck_assert_int_eq(cache_put(NULL, &a, "payload of A", 12), FRNN_OK);
  cache_clear_memory();
  char pa[4096], pb[4096];
  snprintf(pa, sizeof pa, "%s", entry_of(&a));
  snprintf(pb, sizeof pb, "%s", entry_of(&b));
  ck_assert_int_eq(rename(pa, pb), 0);
  ck_assert_int_eq(lookup(&b, NULL, 0), CACHE_CORRUPT);
  ck_assert(!exists(pb));
  ck_assert_int_eq(lookup(&a, NULL, 0), CACHE_MISS);
  ck_assert_int_eq(cache_put(NULL, &b, "payload of B", 12), FRNN_OK);
  cache_clear_memory();
  ck_assert_int_eq(lookup(&b, "payload of B", 12), CACHE_DISK);
}
END_TEST

/* A directory in place of an entry is neither read nor deleted. */
START_TEST(entry_is_a_directory) {
  cache_key k = key_of(300, "dir");
  ck_assert_int_eq(mkdir(entry_of(&k), 0700), 0);
  ck_assert_int_eq(lookup(&k, NULL, 0), CACHE_MISS);
  ck_assert(exists(entry_of(&k)));
  frnn_ctx *ctx;
  ck_assert_int_eq(frnn_ctx_create(&ctx), FRNN_OK);
  ck_assert_int_eq(cache_put(ctx, &k, "x", 1), FRNN_E_IO); /* rename onto a directory */
  ck_assert_int_eq(count_files(dir, ".tmp"), 0);
  ck_assert_int_eq(lookup(&k, "x", 1), CACHE_MEMORY);
  frnn_ctx_destroy(ctx);
}
END_TEST

/* ------------------------------------------------ unwritable directories */
/* put fails with FRNN_E_IO and a message, get misses, memory still serves. */
static void check_unwritable(const char *cache_dir_path) {
  setenv("FRNN_CACHE_DIR", cache_dir_path, 1);
  frnn_ctx *ctx;
  ck_assert_int_eq(frnn_ctx_create(&ctx), FRNN_OK);
  cache_key k = key_of(400, cache_dir_path);
  ck_assert_int_eq(lookup(&k, NULL, 0), CACHE_MISS);
  ck_assert_int_eq(cache_put(ctx, &k, PTX, strlen(PTX)), FRNN_E_IO);
  ck_assert(strstr(frnn_ctx_error(ctx), "cache") != NULL);
  ck_assert_int_eq(lookup(&k, PTX, strlen(PTX)), CACHE_MEMORY);
  cache_clear_memory();
  ck_assert_int_eq(lookup(&k, NULL, 0), CACHE_MISS);
  ck_assert_int_eq(cache_put(NULL, &k, PTX, strlen(PTX)), FRNN_E_IO); /* NULL ctx is fine */
  frnn_ctx_destroy(ctx);
}

START_TEST(unwritable_parent_is_a_file) {
  char file[4200], sub[4300];
  snprintf(file, sizeof file, "%s/plain-file", dir);
  FILE *f = fopen(file, "w");
  ck_assert_ptr_nonnull(f);
  fclose(f);
  snprintf(sub, sizeof sub, "%s/cache/frnn", file); /* mkdir fails with ENOTDIR */
  check_unwritable(sub);
  snprintf(sub, sizeof sub, "%s", file); /* the directory itself is a file */
  check_unwritable(sub);
}
END_TEST

START_TEST(unwritable_proc) { check_unwritable("/proc/frnn-no-such-cache"); }
END_TEST

/* chmod only binds non-root users; as root the writes simply succeed. */
START_TEST(unwritable_read_only_mode) {
  char ro[4200];
  snprintf(ro, sizeof ro, "%s/ro", dir);
  ck_assert_int_eq(mkdir(ro, 0700), 0);
  setenv("FRNN_CACHE_DIR", ro, 1);
  cache_key k = key_of(500, "ro");
  ck_assert_int_eq(cache_put(NULL, &k, "v1", 2), FRNN_OK);
  cache_clear_memory();
  ck_assert_int_eq(chmod(ro, 0500), 0);
  if (geteuid() != 0) {
    check_unwritable(ro);
    /* Entries already there are still read; a damaged one that cannot be
     * deleted is still reported. */
    setenv("FRNN_CACHE_DIR", ro, 1);
    cache_clear_memory();
    ck_assert_int_eq(lookup(&k, "v1", 2), CACHE_DISK);
    ck_assert_int_eq(chmod(entry_of(&k), 0600), 0);
    flip_payload_byte(entry_of(&k));
    cache_clear_memory();
    ck_assert_int_eq(lookup(&k, NULL, 0), CACHE_CORRUPT);
  } else {
    cache_key k2 = key_of(501, "ro");
    ck_assert_int_eq(lookup(&k, "v1", 2), CACHE_DISK);
    frnn_status st = cache_put(NULL, &k2, "v2", 2);
    ck_assert(st == FRNN_OK || st == FRNN_E_IO);
    ck_assert_int_eq(lookup(&k2, "v2", 2), CACHE_MEMORY);
  }
  chmod(ro, 0700);
}
END_TEST

START_TEST(created_on_demand) {
  char deep[4200];
  snprintf(deep, sizeof deep, "%s/a/b//c/", dir);
  setenv("FRNN_CACHE_DIR", deep, 1);
  cache_key k = key_of(600, "deep");
  ck_assert_int_eq(cache_put(NULL, &k, "x", 1), FRNN_OK);
  char want[4200];
  snprintf(want, sizeof want, "%s/a/b//c/", dir);
  ck_assert(strncmp(entry_of(&k), want, strlen(want)) == 0);
  cache_clear_memory();
  ck_assert_int_eq(lookup(&k, "x", 1), CACHE_DISK);
}
END_TEST

/* ---------------------------------------------------------- concurrency */
#define WRITES 200

/* Payload of writer w's i-th write: a header naming (w, i), then bytes that
 * depend on (w, i, position); sizes differ from write to write. */
static size_t make_payload(char *buf, int w, int i) {
  size_t n = 20000 + (size_t)((i * 7919 + w * 104729) % 60000);
  int h = snprintf(buf, 32, "writer %d write %03d|", w, i);
  for (size_t j = (size_t)h; j < n; j++)
    buf[j] = (char)((j * 131 + (size_t)w * 17 + (size_t)i) % 251);
  return n;
}

static bool payload_valid(const char *p, size_t n) {
  int w, i;
  if (sscanf(p, "writer %d write %d|", &w, &i) != 2 || w < 0 || w > 1 || i < 0 || i >= WRITES)
    return false;
  static char want[100000];
  size_t m = make_payload(want, w, i);
  return m == n && memcmp(want, p, n) == 0;
}

static void writer(int w) {
  static char buf[100000];
  cache_key k = key_of(0xc0ffee, "contended");
  for (int i = 0; i < WRITES; i++) {
    size_t n = make_payload(buf, w, i);
    if (cache_put(NULL, &k, buf, n) != FRNN_OK) _exit(10);
  }
  _exit(0);
}

/* Read until both writers are done; a CORRUPT read, a wrong payload or a
 * writer that failed counts as bad. */
static void reader(const pid_t w[2], int *hits, int *bad) {
  cache_key k = key_of(0xc0ffee, "contended");
  bool done[2] = {false, false};
  while (!done[0] || !done[1]) {
    cache_clear_memory();
    char *p;
    size_t n;
    cache_result how;
    if (cache_get(NULL, &k, &p, &n, &how) != FRNN_OK) (*bad)++;
    if (how == CACHE_CORRUPT || (how == CACHE_DISK && !payload_valid(p, n))) (*bad)++;
    if (how == CACHE_DISK) (*hits)++;
    free(p);
    for (int i = 0; i < 2; i++) {
      int status;
      if (!done[i] && waitpid(w[i], &status, WNOHANG) == w[i]) {
        done[i] = true;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) (*bad)++;
      }
    }
  }
}

START_TEST(concurrent_writers_never_tear) {
  int status;
  pid_t w[2];
  int pipefd[2];
  ck_assert_int_eq(pipe(pipefd), 0);
  /* The reader runs in its own process too: three processes in all. */
  pid_t r = fork();
  ck_assert_int_ge(r, 0);
  if (r == 0) {
    close(pipefd[0]);
    for (int i = 0; i < 2; i++) {
      w[i] = fork();
      if (w[i] < 0) _exit(2);
      if (w[i] == 0) writer(i);
    }
    int hits = 0, bad = 0;
    reader(w, &hits, &bad);
    int res[2] = {hits, bad};
    if (write(pipefd[1], res, sizeof res) != sizeof res) _exit(3);
    _exit(bad ? 1 : 0);
  }
  close(pipefd[1]);
  int res[2] = {-1, -1};
  ck_assert_int_eq(read(pipefd[0], res, sizeof res), (ssize_t)sizeof res);
  close(pipefd[0]);
  ck_assert_int_eq(waitpid(r, &status, 0), r);
  printf("concurrent: reader saw %d whole entries, %d torn or corrupt\n", res[0], res[1]);
  ck_assert_int_eq(res[1], 0);
  ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  /* The last write wins whole; no temporary files are left. */
  cache_clear_memory();
  cache_key k = key_of(0xc0ffee, "contended");
  char *p;
  size_t n;
  cache_result how;
  ck_assert_int_eq(cache_get(NULL, &k, &p, &n, &how), FRNN_OK);
  ck_assert_int_eq(how, CACHE_DISK);
  ck_assert(payload_valid(p, n));
  ck_assert(strstr(p, "write 199|") != NULL);
  free(p);
  ck_assert_int_eq(count_files(dir, ".tmp"), 0);
}
END_TEST

/* One writer alone, in a child process, finishes cleanly. */
START_TEST(writer_process_exits_cleanly) {
  pid_t p = fork();
  ck_assert_int_ge(p, 0);
  if (p == 0) writer(0);
  int status;
  ck_assert_int_eq(waitpid(p, &status, 0), p);
  ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}
END_TEST

/* ------------------------------------------------------------ directory */
START_TEST(directory_fallback_order) {
  char buf[4096];
  setenv("FRNN_CACHE_DIR", "/custom/frnn-dir", 1);
  setenv("XDG_CACHE_HOME", "/xdg", 1);
  setenv("HOME", "/home/someone", 1);
  ck_assert_int_eq(cache_dir(buf, sizeof buf), FRNN_OK);
  ck_assert_str_eq(buf, "/custom/frnn-dir");
  setenv("FRNN_CACHE_DIR", "", 1); /* empty: not set */
  ck_assert_int_eq(cache_dir(buf, sizeof buf), FRNN_OK);
  ck_assert_str_eq(buf, "/xdg/frnn");
  unsetenv("FRNN_CACHE_DIR");
  ck_assert_int_eq(cache_dir(buf, sizeof buf), FRNN_OK);
  ck_assert_str_eq(buf, "/xdg/frnn");
  setenv("XDG_CACHE_HOME", "relative/xdg", 1); /* XDG: relative paths are ignored */
  ck_assert_int_eq(cache_dir(buf, sizeof buf), FRNN_OK);
  ck_assert_str_eq(buf, "/home/someone/.cache/frnn");
  unsetenv("XDG_CACHE_HOME");
  ck_assert_int_eq(cache_dir(buf, sizeof buf), FRNN_OK);
  ck_assert_str_eq(buf, "/home/someone/.cache/frnn");
  unsetenv("HOME");
  ck_assert_int_eq(cache_dir(buf, sizeof buf), FRNN_E_IO);
  /* No directory at all: puts report it, gets miss, nothing fails. */
  cache_key k = key_of(700, "nowhere");
  ck_assert_int_eq(cache_put(NULL, &k, "x", 1), FRNN_E_IO);
  ck_assert_int_eq(lookup(&k, "x", 1), CACHE_MEMORY);
  cache_clear_memory();
  ck_assert_int_eq(lookup(&k, NULL, 0), CACHE_MISS);
  char small[8];
  setenv("FRNN_CACHE_DIR", "/a/long/directory", 1);
  ck_assert_int_eq(cache_dir(small, sizeof small), FRNN_E_IO);
}
END_TEST

/* The fallbacks are really used for files: XDG_CACHE_HOME/frnn, then
 * HOME/.cache/frnn, each created on demand. */
START_TEST(directory_fallback_files) {
  char xdg[4200], home[4200], want[4300];
  snprintf(xdg, sizeof xdg, "%s/xdg", dir);
  snprintf(home, sizeof home, "%s/home", dir);
  unsetenv("FRNN_CACHE_DIR");
  setenv("XDG_CACHE_HOME", xdg, 1);
  setenv("HOME", home, 1);
  cache_key k = key_of(800, "fallback");
  ck_assert_int_eq(cache_put(NULL, &k, "xdg", 3), FRNN_OK);
  snprintf(want, sizeof want, "%s/xdg/frnn/", dir);
  ck_assert(strncmp(entry_of(&k), want, strlen(want)) == 0);
  ck_assert(exists(entry_of(&k)));
  unsetenv("XDG_CACHE_HOME");
  ck_assert_int_eq(cache_put(NULL, &k, "home", 4), FRNN_OK);
  snprintf(want, sizeof want, "%s/home/.cache/frnn/", dir);
  ck_assert(strncmp(entry_of(&k), want, strlen(want)) == 0);
  ck_assert(exists(entry_of(&k)));
  cache_clear_memory();
  ck_assert_int_eq(lookup(&k, "home", 4), CACHE_DISK);
}
END_TEST

/* ---------------------------------------------------------------- suite */
static Suite *suite(void) {
  Suite *s = suite_create("cache");
  TCase *tc = tcase_create("cache");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, miss_put_memory_disk);
  tcase_add_test(tc, every_key_field_matters);
  tcase_add_test(tc, binary_empty_and_large_payloads);
  tcase_add_test(tc, overwrite_replaces);
  tcase_add_test(tc, memory_is_bounded);
  tcase_add_test(tc, bad_arguments);
  tcase_add_test(tc, corrupt_payload_byte);
  tcase_add_test(tc, corrupt_truncated);
  tcase_add_test(tc, corrupt_magic_version_length);
  tcase_add_test(tc, corrupt_key_mismatch);
  tcase_add_test(tc, entry_is_a_directory);
  tcase_add_test(tc, unwritable_parent_is_a_file);
  tcase_add_test(tc, unwritable_proc);
  tcase_add_test(tc, unwritable_read_only_mode);
  tcase_add_test(tc, created_on_demand);
  tcase_add_test(tc, concurrent_writers_never_tear);
  tcase_add_test(tc, writer_process_exits_cleanly);
  tcase_add_test(tc, directory_fallback_order);
  tcase_add_test(tc, directory_fallback_files);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
