/* kovn-cni, compiled: the CNI plugin's fast path (node/cni_shim.py builds it).
 *
 * A container runtime execs the plugin for every pod's ADD and DEL, so its start-up is on
 * every pod's path to Ready: CPython's, even as `python3 -I -S` importing only built-in
 * modules, costs ~18 ms of CPU per exec; this costs well under 1 ms. It does only what the
 * common case needs: forward CNI_* and stdin to the kovn node agent's unix socket, asking
 * for the answer already printed ("reply": "printed": a header "<exit> <stdout bytes>\n",
 * then what goes to stdout, then what goes to stderr), and copy that out.
 *
 * Everything else is the Python shim's (node/cni_plugin.py, installed beside this binary as
 * kovn-cni-py), to which this execs with the same environment and stdin: VERSION and any
 * command it does not forward, a network config it cannot read (not one JSON object, a
 * "socket" with escapes, non-ASCII bytes), and an agent it cannot connect to (the Python
 * shim then says why, or lets a DEL whose netns is gone succeed). So there is one
 * implementation of the CNI's rules, and this file stays small.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_INPUT (1 << 20)
#define DEFAULT_SOCKET "/var/run/kovn/cni.sock"
#define BASE_TIMEOUT 120.0 /* the agent bounds ADD by its own timeouts; wait a bit longer */
#define LATEST_VERSION "1.1.0"

extern char **environ;
static const char *self_path = "kovn-cni";
static char input[MAX_INPUT + 1];
static size_t input_len;

/* ---- the Python shim, for everything but the fast path ---------------------------- */

static void fallback(void) {
    char path[4096];
    const char *slash = strrchr(self_path, '/');
    if (slash != NULL) {
        snprintf(path, sizeof path, "%.*s/kovn-cni-py", (int)(slash - self_path), self_path);
    } else {
        ssize_t n = readlink("/proc/self/exe", path, sizeof path - 16);
        if (n <= 0) n = 0;
        path[n] = '\0';
        char *dir = strrchr(path, '/');
        strcpy(dir != NULL ? dir : path, "/kovn-cni-py");
    }
    int fd = memfd_create("kovn-cni-stdin", 0); /* stdin was read: hand the same bytes on */
    if (fd >= 0 && write(fd, input, input_len) == (ssize_t)input_len &&
        lseek(fd, 0, SEEK_SET) == 0 && dup2(fd, 0) == 0) {
        char *argv[] = {path, NULL};
        execve(path, argv, environ);
    }
    printf("{\"cniVersion\": \"%s\", \"code\": 100, \"msg\": \"kovn-cni: cannot run %s: %s"
           " (reinstall kovn: scripts/install.sh)\", \"details\": \"\"}\n",
           LATEST_VERSION, path, strerror(errno));
    exit(1);
}

static void print_json_string(const char *s) {
    putchar('"');
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

/* A CNI error of our own (the agent was reached but the exchange failed): exit 1. */
static void fail(int code, const char *msg, const char *path) {
    char text[2048];
    snprintf(text, sizeof text, "%s%s", msg, path);
    printf("{\"cniVersion\": \"%s\", \"code\": %d, \"msg\": ", LATEST_VERSION, code);
    print_json_string(text);
    printf(", \"details\": \"\"}\n");
    fprintf(stderr, "kovn-cni: %s\n", text);
    exit(1);
}

/* ---- just enough JSON: the config's top-level "socket" and "annotationTimeout" ------ */

static const char *skip_ws(const char *p) {
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    return p;
}

/* The end of the string starting at p (a '"'), or NULL; *escaped tells if it had '\'. */
static const char *skip_string(const char *p, int *escaped) {
    for (p++; *p != '"'; p++) {
        if (*p == '\0') return NULL;
        if (*p == '\\') {
            *escaped = 1;
            if (*++p == '\0') return NULL;
        }
    }
    return p + 1;
}

static const char *skip_value(const char *p, int depth) {
    int escaped = 0;
    p = skip_ws(p);
    if (depth > 64) return NULL;
    if (*p == '"') return skip_string(p, &escaped);
    if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';
        p = skip_ws(p + 1);
        if (*p == close) return p + 1;
        for (;;) {
            if (close == '}') {
                if (*p != '"' || (p = skip_string(p, &escaped)) == NULL) return NULL;
                p = skip_ws(p);
                if (*p++ != ':') return NULL;
            }
            if ((p = skip_value(p, depth + 1)) == NULL) return NULL;
            p = skip_ws(p);
            if (*p == close) return p + 1;
            if (*p++ != ',') return NULL;
            p = skip_ws(p);
        }
    }
    const char *start = p; /* a number, true, false or null */
    while (*p != '\0' && strchr(",}] \t\r\n", *p) == NULL) p++;
    return p > start ? p : NULL;
}

struct config {
    char socket[1024];
    double annotation_timeout;
};

/* 0 if `text` is one JSON object whose "socket" (if any) is a plain string. */
static int read_config(const char *text, struct config *out) {
    const char *p = skip_ws(text);
    if (*p != '{') return -1;
    const char *end = skip_value(p, 0);
    if (end == NULL || *skip_ws(end) != '\0') return -1;
    p = skip_ws(p + 1);
    while (*p == '"') {
        int escaped = 0;
        const char *key = p + 1, *key_end = skip_string(p, &escaped);
        size_t key_len = (size_t)(key_end - 1 - key);
        p = skip_ws(skip_ws(key_end) + 1); /* past ':' (checked by skip_value above) */
        const char *value_end = skip_value(p, 1);
        if (key_len == 6 && memcmp(key, "socket", 6) == 0 && !escaped) {
            int value_escaped = 0;
            if (*p != '"') return -1;
            skip_string(p, &value_escaped);
            size_t n = (size_t)(value_end - p - 2);
            if (value_escaped || n >= sizeof out->socket) return -1;
            memcpy(out->socket, p + 1, n);
            out->socket[n] = '\0';
        } else if (key_len == 17 && memcmp(key, "annotationTimeout", 17) == 0 && !escaped) {
            char *num_end;
            double value = strtod(p, &num_end);
            if (num_end == value_end && value > 0) out->annotation_timeout = value;
        }
        p = skip_ws(value_end);
        if (*p == ',') p = skip_ws(p + 1);
    }
    return 0;
}

/* ---- the request ------------------------------------------------------------------- */

static char request[MAX_INPUT * 2 + 65536];
static size_t request_len;

static void put(const char *s, size_t n) {
    if (request_len + n > sizeof request) fallback();
    memcpy(request + request_len, s, n);
    request_len += n;
}

static void put_str(const char *s) { put(s, strlen(s)); }

static void put_json_string(const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    put("\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            put(e, 2);
        } else if (c < 0x20) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            put(e, 6);
        } else {
            put((const char *)&s[i], 1);
        }
    }
    put("\"", 1);
}

static int ascii(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80) return 0;
    return 1;
}

static void build_request(void) {
    int first = 1;
    put_str("{\"reply\": \"printed\", \"env\": {");
    for (char **e = environ; *e != NULL; e++) {
        const char *eq = strchr(*e, '=');
        if (strncmp(*e, "CNI_", 4) != 0 || eq == NULL) continue;
        if (!ascii(*e, strlen(*e))) fallback();
        if (!first) put_str(", ");
        first = 0;
        put_json_string(*e, (size_t)(eq - *e));
        put_str(": ");
        put_json_string(eq + 1, strlen(eq + 1));
    }
    put_str("}, \"stdin\": ");
    put_json_string(input, input_len);
    put_str("}\n");
}

/* ---- the exchange ------------------------------------------------------------------ */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int wait_fd(int fd, short events, double deadline) {
    struct pollfd pfd = {.fd = fd, .events = events};
    for (;;) {
        double left = deadline - now();
        if (left <= 0) return 0;
        int n = poll(&pfd, 1, (int)(left * 1000) + 1);
        if (n > 0) return 1;
        if (n < 0 && errno != EINTR) return -1;
    }
}

static char reply[4 << 20];

int main(int argc, char **argv) {
    (void)argc;
    if (argv[0] != NULL) self_path = argv[0];
    if (!isatty(0)) {
        ssize_t n;
        while (input_len < MAX_INPUT &&
               (n = read(0, input + input_len, MAX_INPUT - input_len)) != 0) {
            if (n < 0) {
                if (errno == EINTR) continue;
                fallback();
            }
            input_len += (size_t)n;
        }
    }
    input[input_len] = '\0';
    const char *command = getenv("CNI_COMMAND");
    static const char *forwarded[] = {"ADD", "DEL", "CHECK", "STATUS", "GC", NULL};
    int known = 0;
    for (int i = 0; command != NULL && forwarded[i] != NULL; i++)
        known |= strcmp(command, forwarded[i]) == 0;
    struct config config = {.socket = DEFAULT_SOCKET, .annotation_timeout = 0};
    if (!known || strlen(input) != input_len || !ascii(input, input_len) ||
        read_config(input, &config) != 0)
        fallback();
    const char *env_socket = getenv("KOVN_CNI_SOCKET");
    const char *path = env_socket != NULL && *env_socket ? env_socket : config.socket;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) fallback();
    strcpy(addr.sun_path, path);
    int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0 || connect(sock, (struct sockaddr *)&addr, sizeof addr) != 0) fallback();
    build_request();
    double deadline = now() + BASE_TIMEOUT + config.annotation_timeout;
    for (size_t sent = 0; sent < request_len;) {
        ssize_t n = send(sock, request + sent, request_len - sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) fail(11, "lost the connection to the kovn node agent at ", path);
        sent += (size_t)n;
    }
    shutdown(sock, SHUT_WR);
    size_t got = 0;
    for (;;) {
        int ready = wait_fd(sock, POLLIN, deadline);
        if (ready == 0) fail(11, "no answer in time from the kovn node agent at ", path);
        ssize_t n = ready < 0 ? -1 : recv(sock, reply + got, sizeof reply - 1 - got, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) fail(11, "lost the connection to the kovn node agent at ", path);
        if (n == 0) break;
        got += (size_t)n;
        if (got == sizeof reply - 1) fail(11, "an answer too large from the kovn node agent at ",
                                          path);
    }
    reply[got] = '\0';
    int exit_code;
    size_t stdout_len;
    char *body = memchr(reply, '\n', got);
    if (body == NULL || sscanf(reply, "%d %zu", &exit_code, &stdout_len) != 2 ||
        stdout_len > got - (size_t)(body + 1 - reply))
        fail(11, "no valid answer (an older or stopped agent? restart `kovn node`) from the "
                 "kovn node agent at ", path);
    body++;
    size_t stderr_len = got - (size_t)(body - reply) - stdout_len;
    if (fwrite(body, 1, stdout_len, stdout) != stdout_len ||
        fwrite(body + stdout_len, 1, stderr_len, stderr) != stderr_len)
        return 1;
    return exit_code;
}
