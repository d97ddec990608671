/*
 * A fake libnvidia-ml.so.1 for tests: the NVML entry points the agent's pynvml calls, answering
 * from a device table in the file named by FAKE_NVML_CONFIG, so pynvml's own code runs on a
 * machine without a GPU. Built by tests/integration/test_agent_fake_nvml.py with
 *     gcc -shared -fPIC -o libnvidia-ml.so.1 fake_nvml.c
 *
 * The table, one item per line:
 *     init_error N                     nvmlInitWithFlags returns N (9: driver not loaded)
 *     gpu UUID NAME UTIL MEM_USED MEM_TOTAL POWER_MW TEMP ECC_CORR ECC_UNCORR LOST ECC_OK NPROC [PID MEM]...
 *     xid INDEX XID                    one XID event, delivered once
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OK 0
#define E_UNINITIALIZED 1
#define E_INVALID_ARGUMENT 2
#define E_NOT_SUPPORTED 3
#define E_INSUFFICIENT_SIZE 7
#define E_TIMEOUT 10
#define E_GPU_IS_LOST 15
#define MAX_GPUS 16
#define MAX_PROCS 8
#define MAX_EVENTS 64

typedef struct {
    char uuid[96], name[96];
    unsigned util, temp, lost, ecc_ok, nproc;
    unsigned long long mem_used, mem_total, power_mw, ecc_corr, ecc_uncorr;
    unsigned pids[MAX_PROCS];
    unsigned long long proc_mem[MAX_PROCS];
} gpu_t;

typedef struct { unsigned pid; unsigned long long used; unsigned gi, ci; } proc_info_t;
typedef struct { unsigned long long total, free, used; } memory_t;
typedef struct { unsigned gpu, memory; } utilization_t;
typedef struct { void *device; unsigned long long type, data; unsigned gi, ci; } event_t;

static gpu_t gpus[MAX_GPUS];
static unsigned ngpus, events[MAX_EVENTS][2], nevents, next_event, initialised;
static int init_error;

static int load(void) {
    const char *path = getenv("FAKE_NVML_CONFIG");
    FILE *f = path ? fopen(path, "r") : NULL;
    char line[1024];
    ngpus = nevents = next_event = 0;
    init_error = 0;
    if (!f) return 9;
    while (fgets(line, sizeof line, f)) {
        gpu_t *g = &gpus[ngpus];
        int used = 0;
        if (sscanf(line, "init_error %d", &init_error) == 1) continue;
        if (nevents < MAX_EVENTS && sscanf(line, "xid %u %u", &events[nevents][0], &events[nevents][1]) == 2) {
            nevents++;
            continue;
        }
        if (ngpus < MAX_GPUS && sscanf(line, "gpu %95s %95s %u %llu %llu %llu %u %llu %llu %u %u %u%n", g->uuid,
                   g->name, &g->util, &g->mem_used, &g->mem_total, &g->power_mw, &g->temp, &g->ecc_corr,
                   &g->ecc_uncorr, &g->lost, &g->ecc_ok, &g->nproc, &used) == 12) {
            char *rest = line + used;
            int n = 0;
            if (g->nproc > MAX_PROCS) g->nproc = MAX_PROCS;
            for (unsigned i = 0; i < g->nproc; i++, rest += n)
                if (sscanf(rest, " %u %llu%n", &g->pids[i], &g->proc_mem[i], &n) != 2) g->nproc = i;
            ngpus++;
        }
    }
    fclose(f);
    return init_error;
}

static gpu_t *gpu(void *device) {
    unsigned long i = (unsigned long)device;
    return initialised && i >= 1 && i <= ngpus ? &gpus[i - 1] : NULL;
}

#define DEVICE(d) gpu_t *g = gpu(d); if (!g) return E_INVALID_ARGUMENT; if (g->lost) return E_GPU_IS_LOST

int nvmlInitWithFlags(unsigned flags) { (void)flags; int r = load(); initialised = r == 0; return r; }
int nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
int nvmlShutdown(void) { initialised = 0; return OK; }

const char *nvmlErrorString(int r) {
    switch (r) {
    case OK: return "Success";
    case E_NOT_SUPPORTED: return "Not Supported";
    case E_TIMEOUT: return "Timeout";
    case E_GPU_IS_LOST: return "GPU is lost";
    case 9: return "Driver Not Loaded";
    default: return "Unknown Error";
    }
}

int nvmlDeviceGetCount_v2(unsigned *count) { if (!initialised) return E_UNINITIALIZED; *count = ngpus; return OK; }

int nvmlDeviceGetHandleByIndex_v2(unsigned index, void **device) {
    if (!initialised) return E_UNINITIALIZED;
    if (index >= ngpus) return E_INVALID_ARGUMENT;
    *device = (void *)(unsigned long)(index + 1);
    return OK;
}

int nvmlDeviceGetUUID(void *d, char *out, unsigned size) {
    gpu_t *g = gpu(d);
    if (!g) return E_INVALID_ARGUMENT;
    snprintf(out, size, "%s", g->uuid);
    return OK;
}

int nvmlDeviceGetName(void *d, char *out, unsigned size) { DEVICE(d); snprintf(out, size, "%s", g->name); return OK; }

int nvmlDeviceGetMemoryInfo(void *d, memory_t *m) {
    DEVICE(d);
    m->total = g->mem_total; m->used = g->mem_used; m->free = g->mem_total - g->mem_used;
    return OK;
}

int nvmlDeviceGetUtilizationRates(void *d, utilization_t *u) { DEVICE(d); u->gpu = g->util; u->memory = 0; return OK; }
int nvmlDeviceGetPowerUsage(void *d, unsigned *mw) { DEVICE(d); *mw = (unsigned)g->power_mw; return OK; }
int nvmlDeviceGetTemperature(void *d, int sensor, unsigned *t) { (void)sensor; DEVICE(d); *t = g->temp; return OK; }

int nvmlDeviceGetTotalEccErrors(void *d, int type, int counter, unsigned long long *count) {
    (void)counter;
    DEVICE(d);
    if (!g->ecc_ok) return E_NOT_SUPPORTED;
    *count = type == 0 ? g->ecc_corr : g->ecc_uncorr;
    return OK;
}

int nvmlDeviceGetComputeRunningProcesses_v3(void *d, unsigned *count, proc_info_t *out) {
    DEVICE(d);
    if (g->nproc == 0) { *count = 0; return OK; }
    if (!out || *count < g->nproc) { *count = g->nproc; return E_INSUFFICIENT_SIZE; }
    for (unsigned i = 0; i < g->nproc; i++) {
        out[i].pid = g->pids[i]; out[i].used = g->proc_mem[i]; out[i].gi = out[i].ci = 0xFFFFFFFF;
    }
    *count = g->nproc;
    return OK;
}

int nvmlEventSetCreate(void **set) { if (!initialised) return E_UNINITIALIZED; *set = (void *)1; return OK; }
int nvmlEventSetFree(void *set) { (void)set; return OK; }
int nvmlDeviceRegisterEvents(void *d, unsigned long long types, void *set) {
    (void)types; (void)set;
    return gpu(d) ? OK : E_INVALID_ARGUMENT;
}

int nvmlEventSetWait_v2(void *set, event_t *data, unsigned timeout_ms) {
    (void)set; (void)timeout_ms;
    if (next_event >= nevents) return E_TIMEOUT;
    data->device = (void *)(unsigned long)(events[next_event][0] + 1);
    data->type = 8; /* nvmlEventTypeXidCriticalError */
    data->data = events[next_event][1];
    data->gi = data->ci = 0xFFFFFFFF;
    next_event++;
    return OK;
}
