/*
 * What crashinfo(8)'s vmstat, pstat, ddb and config sections read, for the
 * example kernel: per-CPU data (sys/sys/pcpu.h), counter(9), struct vmmeter
 * (sys/sys/vmmeter.h), malloc types (sys/sys/malloc.h, kern_malloc.c), UMA
 * kegs and zones (vm/uma_int.h), interrupt counters (x86 intr_machdep.c),
 * VNET (net/vnet.h), the ddb capture buffer (ddb/db_capture.c), config(8)'s
 * kernconfstring, and a tree(3) RB tree (vm/vm_phys.c).
 *
 * FreeBSD 14 names and types; members no debugger reads are left opaque.
 * The values live in the dump, written by tests/fixturegen/vmstat.py, which
 * also computes these layouts per architecture: examples/build.py asserts
 * every offset and size at compile time.  Only fixed-width and pointer types,
 * plus the per-architecture constants below.
 */
#ifndef _EXAMPLE_VMSTAT_H_
#define _EXAMPLE_VMSTAT_H_

#include "kernel.h"

typedef unsigned char		uint8_t;
typedef short			int16_t;
typedef unsigned long		vm_offset_t;
typedef uint32_t		smr_seq_t;
typedef uint64_t		*counter_u64_t;		/* sys/sys/_types.h */
#if defined(__i386__)
typedef int			time_t;
#else
typedef __INT64_TYPE__		time_t;
#endif

/* machine/param.h */
#if defined(__aarch64__) || defined(__powerpc__)
#define	CACHE_LINE_SIZE	128
#else
#define	CACHE_LINE_SIZE	64
#endif
/* vm/uma_int.h */
#if defined(__x86_64__) || defined(__powerpc64__)
#define	UMA_SUPER_ALIGN	(CACHE_LINE_SIZE * 2)
#else
#define	UMA_SUPER_ALIGN	CACHE_LINE_SIZE
#endif
/* x86 needs sizeof(struct pcpu) == UMA_PCPU_ALLOC_SIZE (machine/pcpu_aux.h). */
#if defined(__x86_64__) || defined(__i386__)
#define	PCPU_SIZE	4096
#else
#define	PCPU_SIZE	1024
#endif
#define	MAXCPU		32	/* this kernel's cpuid_to_pcpu[] and dpcpu_off[] */
#define	CPUSTATES	5
#define	MALLOC_DEBUG_MAXZONES	1

#if defined(__x86_64__)
#define	KERN_MACHINE	"amd64"
#define	KERN_CPU	"HAMMER"
#elif defined(__i386__)
#define	KERN_MACHINE	"i386"
#define	KERN_CPU	"I686_CPU"
#elif defined(__aarch64__)
#define	KERN_MACHINE	"arm64"
#define	KERN_CPU	"ARM64"
#elif defined(__riscv)
#define	KERN_MACHINE	"riscv"
#define	KERN_CPU	"RISCV"
#elif defined(__powerpc__)
#define	KERN_MACHINE	"powerpc"
#define	KERN_CPU	"AIM"
#elif defined(__arm__)
#define	KERN_MACHINE	"arm"
#define	KERN_CPU	"CPU_CORTEXA"
#elif defined(__mips__)
#define	KERN_MACHINE	"mips"
#define	KERN_CPU	"CPU_MIPS4KC"
#endif

#ifndef STAILQ_ENTRY
#define	STAILQ_ENTRY(type)						\
struct {								\
	struct type *stqe_next;	/* next element */			\
}
#endif

/* sys/sys/tree.h (FreeBSD 13 and 14: colour bits in rbe_parent) */
#define	RB_HEAD(name, type)						\
struct name {								\
	struct type *rbh_root; /* root of the tree */			\
}
#define	RB_ENTRY(type)							\
struct {								\
	struct type *rbe_left;		/* left element */		\
	struct type *rbe_right;		/* right element */		\
	struct type *rbe_parent;	/* parent element */		\
}

/* sys/sys/_mutex.h */
struct mtx_padalign {
	struct lock_object	lock_object;
	volatile uintptr_t	mtx_lock;
} __attribute__((aligned(CACHE_LINE_SIZE)));

/* sys/sys/pcpu.h: the machine-independent fields, padded for PCPU_MD_FIELDS. */
struct rm_queue {
	struct rm_queue	*volatile rmq_next;
	struct rm_queue	*volatile rmq_prev;
};

struct pcpu {
	union {
		struct {
			struct thread	*pc_curthread;	/* Current thread */
			struct thread	*pc_idlethread;	/* Idle thread */
			struct thread	*pc_fpcurthread; /* Fp state owner */
			struct thread	*pc_deadthread;	/* Zombie thread or NULL */
			struct pcb	*pc_curpcb;	/* Current pcb */
			void		*pc_sched;	/* Scheduler state */
			uint64_t	pc_switchtime;	/* cpu_ticks() at last csw */
			int		pc_switchticks;	/* `ticks' at last csw */
			u_int		pc_cpuid;	/* This cpu number */
			STAILQ_ENTRY(pcpu) pc_allcpu;
			struct lock_list_entry *pc_spinlocks;
			long		pc_cp_time[CPUSTATES]; /* statclock ticks */
			struct device	*pc_device;
			void		*pc_netisr;	/* netisr SWI cookie */
			int		pc_unused1;	/* unused field */
			int		pc_domain;	/* Memory domain. */
			struct rm_queue	pc_rm_queue;	/* rmlock list of trackers */
			uintptr_t	pc_dynamic;	/* Dynamic per-cpu data area */
			uint64_t	pc_early_dummy_counter;	/* Startup time counter(9) */
			uintptr_t	pc_zpcpu_offset; /* Offset into zpcpu allocs */
		};
		char	__pcpu_md[PCPU_SIZE];	/* PCPU_MD_FIELDS */
	};
} __attribute__((aligned(CACHE_LINE_SIZE)));

STAILQ_HEAD(cpuhead, pcpu);

/* sys/sys/vmmeter.h */
struct vmmeter {
	counter_u64_t v_swtch;		/* (p) context switches */
	counter_u64_t v_trap;		/* (p) calls to trap */
	counter_u64_t v_syscall;	/* (p) calls to syscall() */
	counter_u64_t v_intr;		/* (p) device interrupts */
	counter_u64_t v_soft;		/* (p) software interrupts */
	counter_u64_t v_vm_faults;	/* (p) address memory faults */
	counter_u64_t v_io_faults;	/* (p) page faults requiring I/O */
	counter_u64_t v_cow_faults;	/* (p) copy-on-writes faults */
	counter_u64_t v_cow_optim;	/* (p) optimized COW faults */
	counter_u64_t v_zfod;		/* (p) pages zero filled on demand */
	counter_u64_t v_ozfod;		/* (p) optimized zero fill pages */
	counter_u64_t v_swapin;		/* (p) swap pager pageins */
	counter_u64_t v_swapout;	/* (p) swap pager pageouts */
	counter_u64_t v_swappgsin;	/* (p) swap pager pages paged in */
	counter_u64_t v_swappgsout;	/* (p) swap pager pages paged out */
	counter_u64_t v_vnodein;	/* (p) vnode pager pageins */
	counter_u64_t v_vnodeout;	/* (p) vnode pager pageouts */
	counter_u64_t v_vnodepgsin;	/* (p) vnode_pager pages paged in */
	counter_u64_t v_vnodepgsout;	/* (p) vnode pager pages paged out */
	counter_u64_t v_intrans;	/* (p) intransit blocking page faults */
	counter_u64_t v_reactivated;	/* (p) reactivated by the pagedaemon */
	counter_u64_t v_pdwakeups;	/* (p) times daemon has awaken */
	counter_u64_t v_pdpages;	/* (p) pages analyzed by daemon */
	counter_u64_t v_pdshortfalls;	/* (p) page reclamation shortfalls */
	counter_u64_t v_dfree;		/* (p) pages freed by daemon */
	counter_u64_t v_pfree;		/* (p) pages freed by processes */
	counter_u64_t v_tfree;		/* (p) total pages freed */
	counter_u64_t v_forks;		/* (p) fork() calls */
	counter_u64_t v_vforks;		/* (p) vfork() calls */
	counter_u64_t v_rforks;		/* (p) rfork() calls */
	counter_u64_t v_kthreads;	/* (p) fork() calls by kernel */
	counter_u64_t v_forkpages;	/* (p) pages affected by fork() */
	counter_u64_t v_vforkpages;	/* (p) pages affected by vfork() */
	counter_u64_t v_rforkpages;	/* (p) pages affected by rfork() */
	counter_u64_t v_kthreadpages;	/* (p) ... and by kernel fork() */
	counter_u64_t v_wire_count;	/* (p) pages wired down */
	u_int v_page_size;	/* (c) page size in bytes */
	u_int v_page_count;	/* (c) total number of pages in system */
	u_int v_free_reserved;	/* (c) pages reserved for deadlock */
	u_int v_free_target;	/* (c) pages desired free */
	u_int v_free_min;	/* (c) pages desired free */
	u_int v_inactive_target; /* (c) pages desired inactive */
	u_int v_pageout_free_min;   /* (c) min pages reserved for kernel */
	u_int v_interrupt_free_min; /* (c) reserved pages for int code */
	u_int v_free_severe;	/* (c) severe page depletion point */
};

/* sys/sys/malloc.h */
struct malloc_type_stats {
	uint64_t	mts_memalloced;	/* Bytes allocated on CPU. */
	uint64_t	mts_memfreed;	/* Bytes freed on CPU. */
	uint64_t	mts_numallocs;	/* Number of allocates on CPU. */
	uint64_t	mts_numfrees;	/* number of frees on CPU. */
	uint64_t	mts_size;	/* Bitmask of sizes allocated on CPU. */
	uint64_t	_mts_reserved1;	/* Reserved field. */
	uint64_t	_mts_reserved2;	/* Reserved field. */
	uint64_t	_mts_reserved3;	/* Reserved field. */
};

struct malloc_type_internal {
	uint32_t	mti_probes[2];	/* DTrace probe ID array. */
	u_char		mti_zone;
	struct malloc_type_stats *mti_stats;	/* zpcpu: one per CPU */
	u_long		mti_spare[8];
};

struct malloc_type {
	struct malloc_type *ks_next;	/* Next in global chain. */
	u_long		 ks_version;	/* Detect programmer error. */
	const char	*ks_shortdesc;	/* Printable type name. */
	struct malloc_type_internal ks_mti;
};

/* kern/kern_malloc.c (FreeBSD leaves this structure unnamed) */
struct kmemzone {
	int		 kz_size;
	const char	*kz_name;
	struct uma_zone	*kz_zone[MALLOC_DEBUG_MAXZONES];
};

/* vm/uma_int.h */
struct uma_hash {
	struct slabhashhead	*uh_slab_hash;	/* Hash table for slabs */
	u_int		uh_hashsize;	/* Current size of the hash table */
	u_int		uh_hashmask;	/* Mask used during hashing */
};

struct domainset_ref {			/* sys/sys/_domainset.h */
	struct domainset *volatile dr_policy;
	unsigned int	dr_iter;
};

struct uma_bucket {
	STAILQ_ENTRY(uma_bucket)	ub_link; /* Link into the zone */
	int16_t		ub_cnt;			/* Count of items in bucket. */
	int16_t		ub_entries;		/* Max items. */
	smr_seq_t	ub_seq;			/* SMR sequence number. */
	void		*ub_bucket[];		/* actual allocation storage */
};

struct uma_cache_bucket {
	struct uma_bucket *ucb_bucket;
	int16_t		ucb_cnt;
	int16_t		ucb_entries;
	uint32_t	ucb_spare;
};

struct uma_cache {
	struct uma_cache_bucket	uc_freebucket;	/* Bucket we're freeing to */
	struct uma_cache_bucket	uc_allocbucket;	/* Bucket to allocate from */
	struct uma_cache_bucket	uc_crossbucket;	/* cross domain bucket */
	uint64_t		uc_allocs;	/* Count of allocations */
	uint64_t		uc_frees;	/* Count of frees */
} __attribute__((aligned(UMA_SUPER_ALIGN)));

LIST_HEAD(slabhead, uma_slab);

struct uma_domain {
	struct mtx_padalign ud_lock;	/* Lock for the domain lists. */
	struct slabhead	ud_part_slab;	/* partially allocated slabs */
	struct slabhead	ud_free_slab;	/* completely unallocated slabs */
	struct slabhead ud_full_slab;	/* fully allocated slabs */
	uint32_t	ud_pages;	/* Total page count */
	uint32_t	ud_free_items;	/* Count of items free in all slabs */
	uint32_t	ud_free_slabs;	/* Count of free slabs */
} __attribute__((aligned(CACHE_LINE_SIZE)));

struct uma_keg {
	struct uma_hash	uk_hash;
	LIST_HEAD(,uma_zone)	uk_zones;	/* Keg's zones */
	struct domainset_ref uk_dr;	/* Domain selection policy. */
	uint32_t	uk_align;	/* Alignment mask */
	uint32_t	uk_reserve;	/* Number of reserved items. */
	uint32_t	uk_size;	/* Requested size of each item */
	uint32_t	uk_rsize;	/* Real size of each item */
	void		*uk_init;	/* Keg's init routine */
	void		*uk_fini;	/* Keg's fini routine */
	void		*uk_allocf;	/* Allocation function */
	void		*uk_freef;	/* Free routine */
	u_long		uk_offset;	/* Next free offset from base KVA */
	vm_offset_t	uk_kva;		/* Zone base KVA */
	uint32_t	uk_pgoff;	/* Offset to uma_slab struct */
	uint16_t	uk_ppera;	/* pages per allocation from backend */
	uint16_t	uk_ipers;	/* Items per slab */
	uint32_t	uk_flags;	/* Internal flags */
	const char	*uk_name;	/* Name of creating zone. */
	LIST_ENTRY(uma_keg)	uk_link;	/* List of all kegs */
	struct uma_domain	uk_domain[];	/* Keg's slab lists. */
};

STAILQ_HEAD(uma_bucketlist, uma_bucket);

struct uma_zone_domain {
	struct uma_bucketlist uzd_buckets; /* full buckets */
	struct uma_bucket *uzd_cross;	/* Fills from cross buckets. */
	long		uzd_nitems;	/* total item count */
	long		uzd_imax;	/* maximum item count this period */
	long		uzd_imin;	/* minimum item count this period */
	long		uzd_wss;	/* working set size estimate */
	smr_seq_t	uzd_seq;	/* Lowest queued seq. */
	struct mtx	uzd_lock;	/* Lock for the domain */
} __attribute__((aligned(CACHE_LINE_SIZE)));

struct uma_zone {
	uint32_t	uz_flags;	/* Flags inherited from kegs */
	uint32_t	uz_size;	/* Size inherited from kegs */
	void		*uz_ctor;	/* Constructor for each allocation */
	void		*uz_dtor;	/* Destructor */
	void		*uz_smr;	/* Safe memory reclaim context. */
	uint64_t	uz_max_items;	/* Maximum number of items to alloc */
	uint64_t	uz_bucket_max;	/* Maximum bucket cache size */
	uint16_t	uz_bucket_size;	/* Number of items in full bucket */
	uint16_t	uz_bucket_size_max; /* Maximum number of bucket items */
	uint32_t	uz_sleepers;	/* Threads sleeping on limit */
	counter_u64_t	uz_xdomain;	/* Total number of cross-domain frees */
	struct uma_keg	*uz_keg;	/* This zone's keg if !CACHE */
	void		*uz_import;	/* Import new memory to cache. */
	void		*uz_release;	/* Release memory from cache. */
	void		*uz_arg;	/* Import/release argument. */
	void		*uz_init;	/* Initializer for each item */
	void		*uz_fini;	/* Finalizer for each item. */
	volatile uint64_t uz_items;	/* Total items count & sleepers */
	uint64_t	uz_sleeps;	/* Total number of alloc sleeps */
	LIST_ENTRY(uma_zone) uz_link;	/* List of all zones in keg */
	counter_u64_t	uz_allocs;	/* Total number of allocations */
	counter_u64_t	uz_frees;	/* Total number of frees */
	counter_u64_t	uz_fails;	/* Total number of alloc failures */
	const char	*uz_name;	/* Text name of the zone */
	char		*uz_ctlname;	/* sysctl safe name string. */
	int		uz_namecnt;	/* duplicate name count. */
	uint16_t	uz_bucket_size_min; /* Min number of items in bucket */
	uint16_t	uz_pad0;
	struct sysctl_oid *uz_oid;	/* sysctl oid pointer. */
	const char	*uz_warning;	/* Warning to print on failure */
	void		*_uz_opaque[12];	/* uz_ratecheck, uz_maxaction */
	struct mtx	uz_cross_lock;	/* Cross domain free lock */
	struct uma_cache	uz_cpu[]; /* Per cpu caches */
	/* domains follow here: ZDOM_GET(z, n) */
};

/* net/vnet.h */
struct vnet {
	LIST_ENTRY(vnet)	 vnet_le;	/* all vnets list */
	u_int			 vnet_magic_n;
	u_int			 vnet_ifcnt;
	u_int			 vnet_sockcnt;
	u_int			 vnet_state;	/* SI_SUB_* */
	void			*vnet_data_mem;
	uintptr_t		 vnet_data_base;
	_Bool			 vnet_shutdown;	/* Shutdown in progress. */
} __attribute__((aligned(CACHE_LINE_SIZE)));
LIST_HEAD(vnet_list_head, vnet);

/* vm/vm_phys.c */
struct vm_phys_fictitious_seg {
	RB_ENTRY(vm_phys_fictitious_seg) node;
	/* Memory region data */
	vm_paddr_t	start;
	vm_paddr_t	end;
	struct vm_page	*first_page;
};
RB_HEAD(fict_tree, vm_phys_fictitious_seg);

/* kern/kern_thread.c */
LIST_HEAD(tidhashhead, thread);

#endif /* !_EXAMPLE_VMSTAT_H_ */
