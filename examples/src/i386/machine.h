/*
 * i386 (sys/i386/include/_types.h, pcb.h, frame.h): the context a
 * switched-out thread resumes from and what calltrap pushes on a trap
 * (kernel-mode traps stop before tf_esp/tf_ss).
 */
typedef int32_t			register_t;
typedef uint64_t		vm_paddr_t;	/* PAE */

/* sys/i386/include/segments.h */
struct segment_descriptor {
	unsigned sd_lolimit:16;		/* segment extent (lsb) */
	unsigned sd_lobase:24 __attribute__((packed)); /* segment base address (lsb) */
	unsigned sd_type:5;		/* segment type */
	unsigned sd_dpl:2;		/* segment descriptor priority level */
	unsigned sd_p:1;		/* segment descriptor present */
	unsigned sd_hilimit:4;		/* segment extent (msb) */
	unsigned sd_xx:2;		/* unused */
	unsigned sd_def32:1;		/* default 32 vs 16 bit size */
	unsigned sd_gran:1;		/* limit granularity (byte/page units)*/
	unsigned sd_hibase:8;		/* segment base address  (msb) */
} __attribute__((packed));

/* sys/i386/include/pcb.h (threads.md §5.2); the rest is padding */
struct pcb {
	int	pcb_edi;
	int	pcb_esi;
	int	pcb_ebp;
	int	pcb_esp;
	int	pcb_ebx;
	int	pcb_eip;
	struct segment_descriptor pcb_fsd;
	struct segment_descriptor pcb_gsd;
	int	pcb_ds;
	int	pcb_es;
	int	pcb_fs;
	int	pcb_gs;
	int	pcb_ss;
	int	pcb_cr0;
	int	pcb_cr2;
	int	pcb_cr3;
	int	pcb_cr4;
	int	pcb_dr0;
	int	pcb_dr1;
	int	pcb_dr2;
	int	pcb_dr3;
	int	pcb_dr6;
	int	pcb_dr7;
	char	pcb_pad[0x180 - 100];	/* to the dump's pcb_size */
};

/* sys/i386/include/frame.h */
struct trapframe {
	int	tf_fs;
	int	tf_es;
	int	tf_ds;
	int	tf_edi;
	int	tf_esi;
	int	tf_ebp;
	int	tf_isp;
	int	tf_ebx;
	int	tf_edx;
	int	tf_ecx;
	int	tf_eax;
	int	tf_trapno;
	/* below portion defined in 386 hardware */
	int	tf_err;
	int	tf_eip;
	int	tf_cs;
	int	tf_eflags;
	/* below only when crossing rings (user to kernel) */
	int	tf_esp;
	int	tf_ss;
};
