/* The web console's files (services/auth/console/ and the JS client,
 * clients/js/broker-client.js), linked into the binary as read-only bytes so
 * that a broker serves its console with no file on disk.  Each blob has an
 * end symbol; the sizes follow from the pair. */
    .section .rodata
    .global console_index_html
    .global console_index_html_end
    .global console_js
    .global console_js_end
    .global console_css
    .global console_css_end
    .global console_client_js
    .global console_client_js_end
console_index_html:
    .incbin BROKER_CONSOLE_INDEX
console_index_html_end:
console_js:
    .incbin BROKER_CONSOLE_JS
console_js_end:
console_css:
    .incbin BROKER_CONSOLE_CSS
console_css_end:
console_client_js:
    .incbin BROKER_CLIENT_JS
console_client_js_end:
    .section .note.GNU-stack,"",@progbits
