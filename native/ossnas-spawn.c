// ossnas-spawn: starts processes for the plugin, so that the event loop that answers Docker never
// forks. Node's child_process forks (libuv uses fork(), not vfork): the kernel copies the page
// tables of the whole plugin, and no call is answered meanwhile; measured in the plugin, about
// 29 ms per process on a busy 2-core host, and 16 Mounts at once held the loop for 0.3-1 s. This
// helper is small and uses posix_spawn (clone with CLONE_VM | CLONE_VFORK in glibc): a start
// costs it well under a millisecond, and the plugin only writes a request to a pipe.
//
// One helper per plugin process, started once (src/host/spawner.ts). It exits when its stdin
// closes (the plugin is gone); what it started lives on, in sessions of their own when asked.
//
// Requests, on stdin: NUL-terminated strings, in this order:
//   id, flags ("s": a new session, as `detached`; "" otherwise), cwd ("" keeps the helper's),
//   argc, argv[0..argc), envc, env[0..envc) (the child's whole environment, NAME=value)
// argv[0] without a slash is looked up in the PATH of that environment (default: the usual
// system directories), not in the helper's own.
//
// Events, on stdout: a line "<type> <id> <n>\n"; for O and E, n bytes follow the line.
//   S id pid       started
//   F id errno     not started (ENOENT: no such command on its PATH)
//   O id n         n bytes its stdout wrote
//   E id n         n bytes its stderr wrote
//   X id status    ended (the wait status); whatever its pipes held was sent before
// Children get /dev/null as stdin, default signal dispositions and an empty signal mask.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

struct child {
  char id[32];
  pid_t pid;
  int out, err; // read ends of its stdout and stderr; -1 once closed
};

static struct child *children;
static size_t nchildren, capchildren;
static int sigpipe_fds[2];

static void die(const char *what) {
  fprintf(stderr, "ossnas-spawn: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void write_all(const void *buf, size_t n) {
  const char *p = buf;
  while (n > 0) {
    ssize_t w = write(1, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      exit(0); // the plugin is gone
    }
    p += w;
    n -= (size_t)w;
  }
}

static void event(char type, const char *id, long n, const void *bytes) {
  char line[96];
  int len = snprintf(line, sizeof line, "%c %s %ld\n", type, id, n);
  write_all(line, (size_t)len);
  if (bytes && n > 0) write_all(bytes, (size_t)n);
}

static void on_sigchld(int sig) {
  (void)sig;
  int saved = errno;
  ssize_t ignored = write(sigpipe_fds[1], "x", 1);
  (void)ignored;
  errno = saved;
}

/** Sends what is in `*fd` now; closes it at its end. Returns 0 once it is closed. */
static int relay(struct child *c, int *fd, char type) {
  char buf[65536];
  for (;;) {
    ssize_t r = read(*fd, buf, sizeof buf);
    if (r > 0) {
      event(type, c->id, r, buf);
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == EAGAIN) return 1;
    close(*fd);
    *fd = -1;
    return 0;
  }
}

/** Where argv0 runs from: itself with a slash, else the first executable match on PATH. */
static int resolve(const char *argv0, char *const env[], char *out, size_t outlen) {
  if (strchr(argv0, '/')) {
    snprintf(out, outlen, "%s", argv0);
    return 0;
  }
  const char *path = DEFAULT_PATH;
  for (char *const *e = env; *e; e++) {
    if (strncmp(*e, "PATH=", 5) == 0) path = *e + 5;
  }
  while (*path) {
    const char *end = strchr(path, ':');
    size_t len = end ? (size_t)(end - path) : strlen(path);
    if (len > 0 && (size_t)snprintf(out, outlen, "%.*s/%s", (int)len, path, argv0) < outlen && access(out, X_OK) == 0) return 0;
    path += len + (end ? 1 : 0);
  }
  return ENOENT;
}

static void start(char **f, int argc, char **argv, char **env) {
  const char *id = f[0], *flags = f[1], *cwd = f[2];
  char file[4096];
  int rc = argc > 0 ? resolve(argv[0], env, file, sizeof file) : EINVAL;
  if (rc) {
    event('F', id, rc, NULL);
    return;
  }
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) < 0) die("pipe2");
  if (pipe2(err, O_CLOEXEC) < 0) die("pipe2");
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  if (*cwd) posix_spawn_file_actions_addchdir_np(&fa, cwd);
  posix_spawnattr_init(&at);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&at, &none);
  posix_spawnattr_setsigdefault(&at, &all); // SIGPIPE, which the helper ignores, among them
  short sflags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
  if (strchr(flags, 's')) sflags |= POSIX_SPAWN_SETSID;
  posix_spawnattr_setflags(&at, sflags);
  pid_t pid;
  rc = posix_spawn(&pid, file, &fa, &at, argv, env);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  close(out[1]);
  close(err[1]);
  if (rc) {
    close(out[0]);
    close(err[0]);
    event('F', id, rc, NULL);
    return;
  }
  fcntl(out[0], F_SETFL, O_NONBLOCK);
  fcntl(err[0], F_SETFL, O_NONBLOCK);
  if (nchildren == capchildren) {
    capchildren = capchildren ? capchildren * 2 : 64;
    children = realloc(children, capchildren * sizeof *children);
    if (!children) die("realloc");
  }
  struct child *c = &children[nchildren++];
  snprintf(c->id, sizeof c->id, "%s", id);
  c->pid = pid;
  c->out = out[0];
  c->err = err[0];
  event('S', id, pid, NULL);
}

static void reap(void) {
  for (;;) {
    int status;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    for (size_t i = 0; i < nchildren; i++) {
      struct child *c = &children[i];
      if (c->pid != pid) continue;
      // What it wrote before it ended goes first; a descendant may keep a pipe open, so only what is there now.
      if (c->out >= 0) relay(c, &c->out, 'O');
      if (c->err >= 0) relay(c, &c->err, 'E');
      if (c->out >= 0) close(c->out);
      if (c->err >= 0) close(c->err);
      event('X', c->id, status, NULL);
      children[i] = children[--nchildren];
      break;
    }
  }
}

/** Parses whole requests from buf[0..*len) and starts them; keeps a partial one. */
static void requests(char *buf, size_t *len) {
  size_t pos = 0;
  for (;;) {
    char *fields[8];
    size_t at = pos;
    int nf = 0;
    // id, flags, cwd, argc
    while (nf < 4) {
      char *z = memchr(buf + at, 0, *len - at);
      if (!z) goto partial;
      fields[nf++] = buf + at;
      at = (size_t)(z - buf) + 1;
    }
    long argc = strtol(fields[3], NULL, 10);
    if (argc < 0 || argc > 100000) exit(2);
    char **argv = calloc((size_t)argc + 1, sizeof *argv);
    if (!argv) die("calloc");
    for (long i = 0; i < argc; i++) {
      char *z = memchr(buf + at, 0, *len - at);
      if (!z) {
        free(argv);
        goto partial;
      }
      argv[i] = buf + at;
      at = (size_t)(z - buf) + 1;
    }
    char *z = memchr(buf + at, 0, *len - at);
    if (!z) {
      free(argv);
      goto partial;
    }
    long envc = strtol(buf + at, NULL, 10);
    if (envc < 0 || envc > 100000) exit(2);
    at = (size_t)(z - buf) + 1;
    char **env = calloc((size_t)envc + 1, sizeof *env);
    if (!env) die("calloc");
    for (long i = 0; i < envc; i++) {
      z = memchr(buf + at, 0, *len - at);
      if (!z) {
        free(argv);
        free(env);
        goto partial;
      }
      env[i] = buf + at;
      at = (size_t)(z - buf) + 1;
    }
    start(fields, (int)argc, argv, env);
    free(argv);
    free(env);
    pos = at;
  }
partial:
  memmove(buf, buf + pos, *len - pos);
  *len -= pos;
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  if (pipe2(sigpipe_fds, O_CLOEXEC | O_NONBLOCK) < 0) die("pipe2");
  struct sigaction sa = {0};
  sa.sa_handler = on_sigchld;
  sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
  sigaction(SIGCHLD, &sa, NULL);

  size_t cap = 1 << 20, len = 0;
  char *buf = malloc(cap);
  if (!buf) die("malloc");
  struct pollfd *fds = NULL;
  size_t capfds = 0;
  for (;;) {
    size_t need = 2 + 2 * nchildren;
    if (need > capfds) {
      capfds = need * 2;
      fds = realloc(fds, capfds * sizeof *fds);
      if (!fds) die("realloc");
    }
    fds[0] = (struct pollfd){.fd = 0, .events = POLLIN};
    fds[1] = (struct pollfd){.fd = sigpipe_fds[0], .events = POLLIN};
    size_t n = 2;
    for (size_t i = 0; i < nchildren; i++) {
      fds[n++] = (struct pollfd){.fd = children[i].out, .events = POLLIN}; // a negative fd is skipped
      fds[n++] = (struct pollfd){.fd = children[i].err, .events = POLLIN};
    }
    if (poll(fds, n, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    if (fds[1].revents) {
      char drain[64];
      while (read(sigpipe_fds[0], drain, sizeof drain) > 0) {
      }
      reap();
      continue; // the table changed: the indexes below are stale
    }
    for (size_t i = 0, k = 2; i < nchildren; i++, k += 2) {
      if (fds[k].revents && children[i].out >= 0) relay(&children[i], &children[i].out, 'O');
      if (fds[k + 1].revents && children[i].err >= 0) relay(&children[i], &children[i].err, 'E');
    }
    if (fds[0].revents) {
      if (len == cap) {
        cap *= 2;
        buf = realloc(buf, cap);
        if (!buf) die("realloc");
      }
      ssize_t r = read(0, buf + len, cap - len);
      if (r == 0) return 0; // the plugin is gone
      if (r < 0) {
        if (errno == EINTR) continue;
        die("read");
      }
      len += (size_t)r;
      requests(buf, &len);
    }
  }
}
