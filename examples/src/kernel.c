/*
 * A miniature FreeBSD kernel for the bundled example dumps: the globals a
 * debugger reads, with their real types (so gdb and lldb print them as
 * structures).  The machine-dependent globals are in <arch>/machdep.c; the
 * functions on the dump's stacks are assembly stubs examples/build.py
 * generates from the dump (stubs.s: each holds the bytes the dump has, with
 * no DWARF: debuggers unwind them with kvm_dbg's frame-pointer, back-chain,
 * prologue and trap-frame rules, as they would a kernel without CFI).
 *
 * examples/build.py compiles this with -g and links it with a generated
 * linker script that puts every symbol at the address the fixture generator
 * gave it; the build fails if one is missing or misplaced.  The values live
 * in the dump: the initializers here are what the file itself holds.
 */
#include "kernel.h"

/* sys/kern/kern_proc.c: the offsets debuggers use without DWARF. */
const int proc_off_p_list = offsetof(struct proc, p_list);
const int proc_off_p_threads = offsetof(struct proc, p_threads);
const int proc_off_p_pid = offsetof(struct proc, p_pid);
const int proc_off_p_hash = offsetof(struct proc, p_hash);
const int proc_off_p_comm = offsetof(struct proc, p_comm);
const int thread_off_td_plist = offsetof(struct thread, td_plist);
const int thread_off_td_tid = offsetof(struct thread, td_tid);
const int thread_off_td_oncpu = offsetof(struct thread, td_oncpu);
const int thread_off_td_name = offsetof(struct thread, td_name);
const int thread_off_td_pcb = offsetof(struct thread, td_pcb);
/* sys/kern/kern_linker.c */
const int kld_off_next = offsetof(struct linker_file, link.tqe_next);
const int kld_off_filename = offsetof(struct linker_file, filename);
const int kld_off_pathname = offsetof(struct linker_file, pathname);
const int kld_off_address = offsetof(struct linker_file, address);
/* sys/kern/kern_mib.c */
const int pcb_size = sizeof(struct pcb);

/* Processes: sys/kern/kern_proc.c */
struct proclist allproc;		/* every process, newest first */
struct pidhashhead *pidhashtbl;		/* pid -> proc hash chains */
u_long pidhash;				/* its mask */

/* The crash: sys/kern/kern_shutdown.c, sys/kern/subr_smp.c */
lwpid_t dumptid;			/* the thread that dumped */
u_int mp_maxid;
int mp_ncpus;
/* (aligned: gcc would give a 4-long object 16 or 32, the dump has it at a long) */
cpuset_t stopped_cpus __attribute__((aligned(sizeof(long))));	/* CPUs stopped by the panic */
const char *panicstr;			/* the panic message */
char panic_buf[256];			/* (vpanic formats into it) */
struct pcb dumppcb;			/* the dumping thread's context */
#if __FreeBSD_version >= 1400089
struct pcb *stoppcbs;			/* per CPU: the stopped CPUs' context */
#else
#define	MAXCPU	2			/* (the example's kernel configuration) */
struct pcb stoppcbs[MAXCPU];		/* per CPU: the stopped CPUs' context */
#endif

/* Message buffer: sys/kern/subr_msgbuf.c */
struct msgbuf *msgbufp;

/* Loaded files: sys/kern/kern_linker.c */
linker_file_list_t linker_files;
linker_file_t linker_kernel_file;
char linker_path[64] = "/boot/kernel;/boot/modules";

/* sys/kern/kern_mib.c, sys/kern/subr_param.c */
char hostname[MAXHOSTNAMELEN] = "crashbox.example.org";
int hz = HZ;				/* (the kernel option: build.py's -DHZ) */
