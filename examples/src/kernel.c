/*
 * A miniature FreeBSD/amd64 kernel for the bundled example dump: the globals
 * a debugger reads, with their real types (so gdb and lldb print them as
 * structures), and the functions on the dump's stacks.
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
/* sys/amd64/amd64/vm_machdep.c */
const int pcb_size = sizeof(struct pcb);

/* Processes: sys/kern/kern_proc.c */
struct proclist allproc;		/* every process, newest first */
struct pidhashhead *pidhashtbl;		/* pid -> proc hash chains */
u_long pidhash;				/* its mask */

/* The crash: sys/kern/kern_shutdown.c, sys/kern/subr_smp.c */
lwpid_t dumptid;			/* the thread that dumped */
u_int mp_maxid;
int mp_ncpus;
/* (aligned: gcc would give a 32-byte object 16 or 32, the dump has it at 8) */
cpuset_t stopped_cpus __attribute__((aligned(8)));	/* CPUs stopped by the panic */
const char *panicstr;			/* the panic message */
char panic_buf[256];			/* (vpanic formats into it) */
struct pcb dumppcb;			/* the dumping thread's context */
struct pcb *stoppcbs;			/* per CPU: the stopped CPUs' context */

/* Message buffer: sys/kern/subr_msgbuf.c */
struct msgbuf *msgbufp;

/* Loaded files: sys/kern/kern_linker.c */
linker_file_list_t linker_files;
linker_file_t linker_kernel_file;
char linker_path[64] = "/boot/kernel;/boot/modules";

/* sys/kern/kern_mib.c, sys/kern/subr_param.c, sys/amd64/amd64/pmap.c */
char hostname[MAXHOSTNAMELEN] = "crashbox.example.org";
int hz = 100;
vm_paddr_t KPML4phys;

/*
 * Functions.  The dump holds 256 bytes of int3 for each, so they are assembly
 * stubs of that size (with no DWARF: gdb unwinds them with kvm_dbg's
 * frame-pointer and trap-frame rules, as it would a kernel without CFI).
 */
#define STR_(x)	#x
#define STR(x)	STR_(x)
#define KFUNC(name, size)						\
	__asm__(".pushsection .text." #name ",\"ax\",@progbits\n"	\
	    "\t.globl " #name "\n"					\
	    "\t.type " #name ",@function\n"				\
	    #name ":\n"							\
	    "\t.fill " STR(size) ",1,0xcc\n"				\
	    "\t.size " #name ",.-" #name "\n"				\
	    "\t.popsection")
#define FUNC(name)	KFUNC(name, 0x100)

KFUNC(btext, 64);		/* locore.S: the kernel's entry */
__asm__(".globl kernbase\n\t.type kernbase,@object\n"	/* locore.S */
    "\t.set kernbase,0xffffffff80000000");		/* KERNBASE */

/* The panic: kern_shutdown.c, amd64/trap.c, exception.S */
FUNC(doadump);
FUNC(kern_reboot);
FUNC(vpanic);
FUNC(panic);
FUNC(trap_fatal);
FUNC(trap_pfault);
FUNC(trap);
FUNC(calltrap);			/* exception.S: pushes the trap frame */
FUNC(nmi_calltrap);
/* What faulted: a sysctl handler reading a NULL string. */
FUNC(strlen);
FUNC(sysctl_handle_string);
FUNC(sysctl_root_handler_locked);
FUNC(sysctl_root);
FUNC(userland_sysctl);
FUNC(sys___sysctl);
FUNC(amd64_syscall);
FUNC(fast_syscall_common);	/* exception.S: the syscall entry */
/* Sleeping and switching. */
FUNC(sched_switch);
FUNC(mi_switch);
FUNC(sleepq_switch);
FUNC(sleepq_wait_sig);
FUNC(sleepq_timedwait);
FUNC(_sleep);
FUNC(_cv_wait_sig);
FUNC(kern_select);
FUNC(kern_wait6);
/* Kernel threads. */
FUNC(fork_exit);
FUNC(fork_trampoline);		/* exception.S: a new thread's first frame */
FUNC(sched_sync);
FUNC(ithread_loop);
FUNC(gtaskqueue_thread_loop);
FUNC(swapper);
FUNC(mi_startup);
/* The other CPU, stopped by the panic while idle. */
FUNC(cpustop_handler);
FUNC(ipi_nmi_handler);
FUNC(cpu_idle);
FUNC(sched_idletd);
