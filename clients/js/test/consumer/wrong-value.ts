// A transport that does not exist: `tsc --strict` must reject this file.
import { ApuraClient } from 'apura-client';

const client = new ApuraClient({ transport: 'websocket' });
client.close();
