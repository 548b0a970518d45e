/* The throwaway-mail lists of data/, linked into the binary as read-only bytes
 * so that a broker needs no data file at run time.  Each blob ends in a NUL. */
    .section .rodata
    .global email_data_domains
    .global email_data_wildcards
email_data_domains:
    .incbin BROKER_DOMAINS_FILE
    .byte 0
email_data_wildcards:
    .incbin BROKER_WILDCARDS_FILE
    .byte 0
    .section .note.GNU-stack,"",@progbits
