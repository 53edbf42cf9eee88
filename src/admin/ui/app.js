document.getElementById('app').textContent = 'Warren';
