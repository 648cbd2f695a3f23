/*
 * A miniature FreeBSD/amd64 kernel: the types of the bundled example dump.
 *
 * Structure and field names and types are FreeBSD's (sys/sys/proc.h,
 * sys/sys/msgbuf.h, sys/sys/linker.h, sys/amd64/include/pcb.h and frame.h).
 * The fields the dump holds sit at the offsets the fixture generator writes
 * (tests/fixturegen/kernelstate.py, PROC/THREAD/KLD and the amd64 PCB and
 * trap frame); the members in between that the dump leaves empty are explicit
 * padding (_pad*), and every offset is checked at compile time, so a change
 * on either side fails the build.
 */
#ifndef _EXAMPLE_KERNEL_H_
#define _EXAMPLE_KERNEL_H_

#define offsetof(t, m)  __builtin_offsetof(t, m)
#define CHECK(t, m, off) \
	_Static_assert(offsetof(struct t, m) == (off), #t "." #m " at " #off)
#define CHECK_SIZE(t, n) \
	_Static_assert(sizeof(struct t) == (n), "sizeof(struct " #t ") == " #n)

typedef unsigned char		u_char;
typedef unsigned short		u_short;
typedef unsigned int		u_int;
typedef unsigned long		u_long;
typedef unsigned short		uint16_t;
typedef unsigned int		uint32_t;
typedef unsigned long		uint64_t;
typedef long			int64_t;
typedef long			register_t;
typedef unsigned long		size_t;
typedef unsigned long		uintptr_t;
typedef char			*caddr_t;
typedef int			pid_t;
typedef int			lwpid_t;
typedef uint64_t		vm_paddr_t;

#define	MAXCOMLEN	19		/* max command name remembered */
#define	MAXHOSTNAMELEN	256		/* max hostname size */
#define	MSG_MAGIC	0x063062

/* sys/sys/queue.h */
#define	LIST_HEAD(name, type)						\
struct name {								\
	struct type *lh_first;	/* first element */			\
}
#define	LIST_ENTRY(type)						\
struct {								\
	struct type *le_next;	/* next element */			\
	struct type **le_prev;	/* address of previous next element */	\
}
#define	TAILQ_HEAD(name, type)						\
struct name {								\
	struct type *tqh_first;	/* first element */			\
	struct type **tqh_last;	/* addr of last next element */		\
}
#define	TAILQ_ENTRY(type)						\
struct {								\
	struct type *tqe_next;	/* next element */			\
	struct type **tqe_prev;	/* address of previous next element */	\
}
#define	STAILQ_HEAD(name, type)						\
struct name {								\
	struct type *stqh_first;/* first element */			\
	struct type **stqh_last;/* addr of last next element */		\
}

/* sys/sys/_lock.h, sys/sys/_mutex.h */
struct lock_object {
	const char	*lo_name;	/* Individual lock name. */
	u_int		lo_flags;
	u_int		lo_data;	/* General class specific data. */
	struct witness	*lo_witness;	/* Data for witness. */
};

struct mtx {
	struct lock_object	lock_object;	/* Common lock properties. */
	volatile uintptr_t	mtx_lock;	/* Owner and flags. */
};

/* sys/sys/_cpuset.h: MAXCPU 256 -> 4 longs */
struct _cpuset {
	long	__bits[4];
};
typedef struct _cpuset cpuset_t;

/* sys/amd64/include/segments.h */
struct region_descriptor {
	uint64_t rd_limit:16;		/* segment extent */
	uint64_t rd_base:64 __attribute__((packed));	/* base address  */
} __attribute__((packed));

/* sys/amd64/include/pcb.h: the context a switched-out thread resumes from. */
struct pcb {
	register_t	pcb_r15;
	register_t	pcb_r14;
	register_t	pcb_r13;
	register_t	pcb_r12;
	register_t	pcb_rbp;
	register_t	pcb_rsp;
	register_t	pcb_rbx;
	register_t	pcb_rip;
	register_t	pcb_fsbase;
	register_t	pcb_gsbase;
	register_t	pcb_kgsbase;
	register_t	pcb_cr0;
	register_t	pcb_cr2;
	register_t	pcb_cr3;
	register_t	pcb_cr4;
	register_t	pcb_dr0;
	register_t	pcb_dr1;
	register_t	pcb_dr2;
	register_t	pcb_dr3;
	register_t	pcb_dr6;
	register_t	pcb_dr7;
	struct region_descriptor pcb_gdt;
	struct region_descriptor pcb_idt;
	struct region_descriptor pcb_ldt;
	uint16_t	pcb_tr;
	u_int		pcb_flags;
	uint16_t	pcb_initial_fpucw;
	caddr_t		pcb_onfault;
	uint64_t	pcb_saved_ucr3;
	uint64_t	pcb_efer;
	uint64_t	pcb_star;
	uint64_t	pcb_lstar;
	uint64_t	pcb_cstar;
	uint64_t	pcb_sfmask;
	struct savefpu	*pcb_save;
	uint64_t	pcb_pad[22];	/* to the dump's pcb_size */
} __attribute__((aligned(64)));
CHECK(pcb, pcb_r15, 0x00);
CHECK(pcb, pcb_r14, 0x08);
CHECK(pcb, pcb_r13, 0x10);
CHECK(pcb, pcb_r12, 0x18);
CHECK(pcb, pcb_rbp, 0x20);
CHECK(pcb, pcb_rsp, 0x28);
CHECK(pcb, pcb_rbx, 0x30);
CHECK(pcb, pcb_rip, 0x38);
CHECK_SIZE(pcb, 0x1c0);

/* sys/amd64/include/frame.h: what the CPU and calltrap push on a trap. */
struct trapframe {
	register_t	tf_rdi;
	register_t	tf_rsi;
	register_t	tf_rdx;
	register_t	tf_rcx;
	register_t	tf_r8;
	register_t	tf_r9;
	register_t	tf_rax;
	register_t	tf_rbx;
	register_t	tf_rbp;
	register_t	tf_r10;
	register_t	tf_r11;
	register_t	tf_r12;
	register_t	tf_r13;
	register_t	tf_r14;
	register_t	tf_r15;
	uint32_t	tf_trapno;
	uint16_t	tf_fs;
	uint16_t	tf_gs;
	register_t	tf_addr;
	uint32_t	tf_flags;
	uint16_t	tf_es;
	uint16_t	tf_ds;
	/* below portion defined in hardware */
	register_t	tf_err;
	register_t	tf_rip;
	register_t	tf_cs;
	register_t	tf_rflags;
	/* the amd64 frame always has the stack registers */
	register_t	tf_rsp;
	register_t	tf_ss;
};
CHECK(trapframe, tf_rdi, 0);
CHECK(trapframe, tf_r15, 112);
CHECK(trapframe, tf_rip, 152);
CHECK(trapframe, tf_cs, 160);
CHECK(trapframe, tf_rflags, 168);
CHECK(trapframe, tf_rsp, 176);
CHECK(trapframe, tf_ss, 184);
CHECK_SIZE(trapframe, 192);

/* sys/sys/proc.h */
struct proc;
struct thread;

/* enum td_states / p_states */
enum p_states {
	PRS_NEW = 0,		/* In creation */
	PRS_NORMAL,		/* threads can be run. */
	PRS_ZOMBIE
};

struct thread {
	struct mtx	*volatile td_lock; /* replaces sched lock */
	struct proc	*td_proc;	/* (*) Associated process. */
	TAILQ_ENTRY(thread) td_plist;	/* (*) All threads in this proc. */
	TAILQ_ENTRY(thread) td_runq;	/* (t) Run queue. */
	TAILQ_ENTRY(thread) td_slpq;	/* (t) Sleep queue. */
	TAILQ_ENTRY(thread) td_lockq;	/* (t) Lock queue. */
	LIST_ENTRY(thread) td_hash;	/* (d) Hash chain. */
	char		_pad0[0x9c - 0x60];
	lwpid_t		td_tid;		/* (b) Thread ID. */
	char		_pad1[0x110 - 0xa0];
	int		td_oncpu;	/* (t) Which cpu we are on. */
	char		_pad2[0x2a4 - 0x114];
	char		td_name[MAXCOMLEN + 1];	/* (*) Thread name. */
	char		_pad3[0x3d8 - 0x2b8];
	struct pcb	*td_pcb;	/* (k) Kernel VA of pcb and kstack. */
	char		_pad4[0x4a0 - 0x3e0];
};
CHECK(thread, td_proc, 0x8);
CHECK(thread, td_plist, 0x10);
CHECK(thread, td_tid, 0x9c);
CHECK(thread, td_oncpu, 0x110);
CHECK(thread, td_name, 0x2a4);
CHECK(thread, td_pcb, 0x3d8);
CHECK_SIZE(thread, 0x4a0);

struct proc {
	LIST_ENTRY(proc) p_list;	/* (d) List of all processes. */
	TAILQ_HEAD(, thread) p_threads;	/* (c) all threads. */
	struct mtx	p_slock;	/* process spin lock */
	char		_pad0[0xb8 - 0x40];
	enum p_states	p_state;	/* (j/c) Process status. */
	pid_t		p_pid;		/* (b) Process identifier. */
	LIST_ENTRY(proc) p_pglist;	/* (g + e) List of processes in pgrp. */
	struct proc	*p_pptr;	/* (c + e) Pointer to parent process. */
	LIST_ENTRY(proc) p_hash;	/* (d) Hash chain. */
	char		_pad1[0x3e0 - 0xe8];
	int		p_numthreads;	/* (c) Number of threads. */
	char		p_comm[MAXCOMLEN + 1];	/* (x) Process name. */
	char		_pad2[0x4b8 - 0x3f8];
};
CHECK(proc, p_list, 0x0);
CHECK(proc, p_threads, 0x10);
CHECK(proc, p_state, 0xb8);
CHECK(proc, p_pid, 0xbc);
CHECK(proc, p_pptr, 0xd0);
CHECK(proc, p_hash, 0xd8);
CHECK(proc, p_numthreads, 0x3e0);
CHECK(proc, p_comm, 0x3e4);
CHECK_SIZE(proc, 0x4b8);

LIST_HEAD(proclist, proc);
LIST_HEAD(pidhashhead, proc);

/* sys/sys/msgbuf.h */
struct msgbuf {
	char	   *msg_ptr;		/* pointer to buffer */
	u_int	   msg_magic;
	u_int	   msg_size;		/* size of buffer area */
	u_int	   msg_wseq;		/* write sequence number */
	u_int	   msg_rseq;		/* read sequence number */
	u_int	   msg_cksum;		/* checksum of contents */
	u_int	   msg_seqmod;		/* range for sequence numbers */
	int	   msg_lastpri;		/* saved priority value */
	u_int      msg_flags;
	struct mtx msg_lock;		/* mutex to protect the buffer */
};
CHECK(msgbuf, msg_ptr, 0);
CHECK(msgbuf, msg_magic, 8);
CHECK(msgbuf, msg_rseq, 20);
CHECK(msgbuf, msg_flags, 36);

/* sys/sys/linker.h */
typedef struct linker_file *linker_file_t;
typedef TAILQ_HEAD(, linker_file) linker_file_list_t;

struct linker_file {
	void		*ops;		/* KOBJ_FIELDS */
	int		refs;		/* reference count */
	int		userrefs;	/* kldload(2) count */
	int		flags;
	TAILQ_ENTRY(linker_file) link;	/* list of all loaded files */
	char		*filename;	/* file which was loaded */
	char		*pathname;	/* file name with full path */
	int		id;		/* unique id */
	caddr_t		address;	/* load address */
	size_t		size;		/* size of file */
	caddr_t		ctors_addr;	/* address of .ctors/.init_array */
	size_t		ctors_size;	/* size of .ctors/.init_array */
	caddr_t		dtors_addr;	/* address of .dtors/.fini_array */
	size_t		dtors_size;	/* size of .dtors/.fini_array */
	int		ndeps;		/* number of dependencies */
	linker_file_t	*deps;		/* list of dependencies */
	STAILQ_HEAD(, common_symbol) common; /* list of common symbols */
	int		loadcnt;	/* load counter value */
	int		nenabled;	/* number of enabled probes */
};
CHECK(linker_file, link, 0x18);
CHECK(linker_file, filename, 0x28);
CHECK(linker_file, pathname, 0x30);
CHECK(linker_file, address, 0x40);
CHECK_SIZE(linker_file, 0x98);

#endif /* !_EXAMPLE_KERNEL_H_ */
