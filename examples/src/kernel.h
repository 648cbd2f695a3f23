/*
 * A miniature FreeBSD kernel: the types of the bundled example dumps.
 *
 * Structure and field names and types are FreeBSD's (sys/sys/proc.h,
 * sys/sys/msgbuf.h, sys/sys/linker.h); the machine-dependent ones (struct
 * pcb, struct trapframe, register_t) come from <arch>/machine.h, selected
 * by the include path (sys/<arch>/include/pcb.h and frame.h).  The fields
 * the dump holds sit at the offsets the fixture generator writes
 * (tests/fixturegen/kernelstate.py, PROC/THREAD/KLD per pointer width and
 * the architecture's PCB and trap frame); the members in between that the
 * dump leaves empty are explicit padding (_pad*, LP(64-bit, 32-bit)
 * bytes), and every offset is checked at compile time, so a change on
 * either side fails the build.
 */
#ifndef _EXAMPLE_KERNEL_H_
#define _EXAMPLE_KERNEL_H_

#define offsetof(t, m)  __builtin_offsetof(t, m)
#define CHECK(t, m, off) \
	_Static_assert(offsetof(struct t, m) == (off), #t "." #m " at " #off)
#define CHECK_SIZE(t, n) \
	_Static_assert(sizeof(struct t) == (n), "sizeof(struct " #t ") == " #n)
#ifdef __LP64__
#define LP(lp64, ilp32)	(lp64)
#else
#define LP(lp64, ilp32)	(ilp32)
#endif

/* sys/<arch>/include/_types.h */
typedef unsigned char		u_char;
typedef unsigned short		u_short;
typedef unsigned int		u_int;
typedef unsigned long		u_long;
typedef unsigned short		uint16_t;
typedef unsigned int		uint32_t;
typedef int			int32_t;
#ifdef __LP64__
typedef unsigned long		uint64_t;
typedef long			int64_t;
#else
typedef unsigned long long	uint64_t;
typedef long long		int64_t;
#endif
typedef unsigned long		size_t;
typedef unsigned long		uintptr_t;
typedef unsigned long		vm_offset_t;
typedef char			*caddr_t;
typedef int			pid_t;
typedef int			lwpid_t;

#include "machine.h"		/* register_t, struct pcb, struct trapframe */

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
	char		_pad0[LP(0x9c - 0x60, 0x54 - 0x30)];
	lwpid_t		td_tid;		/* (b) Thread ID. */
	char		_pad1[LP(0x110 - 0xa0, 0xb8 - 0x58)];
	int		td_oncpu;	/* (t) Which cpu we are on. */
	char		_pad2[LP(0x2a4 - 0x114, 0x1a4 - 0xbc)];
	char		td_name[MAXCOMLEN + 1];	/* (*) Thread name. */
	char		_pad3[LP(0x3d8 - 0x2b8, 0x264 - 0x1b8)];
	struct pcb	*td_pcb;	/* (k) Kernel VA of pcb and kstack. */
	char		_pad4[LP(0x4a0 - 0x3e0, 0x300 - 0x268)];
};
CHECK(thread, td_proc, LP(0x8, 0x4));
CHECK(thread, td_plist, LP(0x10, 0x8));
CHECK(thread, td_tid, LP(0x9c, 0x54));
CHECK(thread, td_oncpu, LP(0x110, 0xb8));
CHECK(thread, td_name, LP(0x2a4, 0x1a4));
CHECK(thread, td_pcb, LP(0x3d8, 0x264));
CHECK_SIZE(thread, LP(0x4a0, 0x300));

struct proc {
	LIST_ENTRY(proc) p_list;	/* (d) List of all processes. */
	TAILQ_HEAD(, thread) p_threads;	/* (c) all threads. */
	struct mtx	p_slock;	/* process spin lock */
	char		_pad0[LP(0xb8 - 0x40, 0x64 - 0x24)];
	enum p_states	p_state;	/* (j/c) Process status. */
	pid_t		p_pid;		/* (b) Process identifier. */
	LIST_ENTRY(proc) p_pglist;	/* (g + e) List of processes in pgrp. */
#ifdef __LP64__
	struct proc	*p_pptr;	/* (c + e) Pointer to parent process. */
	LIST_ENTRY(proc) p_hash;	/* (d) Hash chain. */
#else					/* (the generator's 32-bit order) */
	LIST_ENTRY(proc) p_hash;	/* (d) Hash chain. */
	struct proc	*p_pptr;	/* (c + e) Pointer to parent process. */
#endif
	char		_pad1[LP(0x3e0 - 0xe8, 0x258 - 0x80)];
	int		p_numthreads;	/* (c) Number of threads. */
	char		p_comm[MAXCOMLEN + 1];	/* (x) Process name. */
	char		_pad2[LP(0x4b8 - 0x3f8, 0x2e0 - 0x270)];
};
CHECK(proc, p_list, 0x0);
CHECK(proc, p_threads, LP(0x10, 0x8));
CHECK(proc, p_state, LP(0xb8, 0x64));
CHECK(proc, p_pid, LP(0xbc, 0x68));
CHECK(proc, p_pptr, LP(0xd0, 0x7c));
CHECK(proc, p_hash, LP(0xd8, 0x74));
CHECK(proc, p_numthreads, LP(0x3e0, 0x258));
CHECK(proc, p_comm, LP(0x3e4, 0x25c));
CHECK_SIZE(proc, LP(0x4b8, 0x2e0));

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
CHECK(msgbuf, msg_magic, LP(8, 4));
CHECK(msgbuf, msg_rseq, LP(20, 16));
CHECK(msgbuf, msg_flags, LP(36, 32));

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
#ifndef __LP64__
	char		_pad[0x60 - 0x54];	/* the generator's 32-bit size */
#endif
};
CHECK(linker_file, link, LP(0x18, 0x10));
CHECK(linker_file, filename, LP(0x28, 0x18));
CHECK(linker_file, pathname, LP(0x30, 0x1c));
CHECK(linker_file, address, LP(0x40, 0x24));
CHECK_SIZE(linker_file, LP(0x98, 0x60));

#endif /* !_EXAMPLE_KERNEL_H_ */
