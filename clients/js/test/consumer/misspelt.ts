// A misspelt option: `tsc --strict` must reject this file.
import { ApuraClient } from 'apura-client';

const client = new ApuraClient({ baseUrl: 'https://apura.example.com', transprot: 'sse' });
client.close();
